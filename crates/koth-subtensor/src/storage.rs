//! Storage reads against the chain's metadata: keys built and values decoded by subxt's dynamic
//! API, fetched over JSON-RPC at one block hash so every read of a poll sees the same state.

use serde_json::{json, Value as Json};
use subxt_core::dynamic::{DecodedValueThunk, Value};
use subxt_core::ext::scale_decode::DecodeAsType;
use subxt_core::storage::address::{StorageHashers, StorageKey};
use subxt_core::Metadata;

use crate::rpc::{from_hex, to_hex, RpcClient, RpcError};

/// Keys fetched per `state_queryStorageAt` and listed per `state_getKeysPaged`.
const PAGE: usize = 256;
/// The most keys one prefix listing may return: a subnet has at most 4096 uids, so anything
/// near this is a node answering something else (or without end).
pub const MAX_KEYS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("storage {pallet}.{entry}: {message}")]
    Metadata {
        pallet: String,
        entry: String,
        message: String,
    },
    #[error("storage {pallet}.{entry}: the value does not decode as {expected}: {message}")]
    Decode {
        pallet: String,
        entry: String,
        expected: &'static str,
        message: String,
    },
}

/// One storage item: a pallet and an entry name, as the metadata spells them.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub pallet: &'static str,
    pub entry: &'static str,
}

impl Item {
    pub const fn new(pallet: &'static str, entry: &'static str) -> Self {
        Self { pallet, entry }
    }

    fn err(&self, message: impl ToString) -> StorageError {
        StorageError::Metadata {
            pallet: self.pallet.into(),
            entry: self.entry.into(),
            message: message.to_string(),
        }
    }

    /// The storage key of this item at `keys` (all of a map's keys, or a prefix of them).
    pub fn key(&self, metadata: &Metadata, keys: Vec<Value>) -> Result<Vec<u8>, StorageError> {
        let address = subxt_core::dynamic::storage(self.pallet, self.entry, keys);
        subxt_core::storage::get_address_bytes(&address, metadata).map_err(|e| self.err(e))
    }

    /// Decode a value of this item into `T`.
    pub fn decode<T: DecodeAsType>(
        &self,
        metadata: &Metadata,
        bytes: &[u8],
    ) -> Result<T, StorageError> {
        let address = subxt_core::dynamic::storage(self.pallet, self.entry, Vec::<Value>::new());
        let thunk: DecodedValueThunk =
            subxt_core::storage::decode_value(&mut &bytes[..], &address, metadata)
                .map_err(|e| self.err(e))?;
        thunk.as_type::<T>().map_err(|e| StorageError::Decode {
            pallet: self.pallet.into(),
            entry: self.entry.into(),
            expected: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// The item's default value (what the chain returns for an absent key), decoded as `T`.
    pub fn default<T: DecodeAsType>(&self, metadata: &Metadata) -> Result<T, StorageError> {
        let address = subxt_core::dynamic::storage(self.pallet, self.entry, Vec::<Value>::new());
        let thunk =
            subxt_core::storage::default_value(&address, metadata).map_err(|e| self.err(e))?;
        thunk.as_type::<T>().map_err(|e| StorageError::Decode {
            pallet: self.pallet.into(),
            entry: self.entry.into(),
            expected: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// The map keys encoded in a full storage key of this item.
    pub fn decode_keys(
        &self,
        metadata: &Metadata,
        storage_key: &[u8],
    ) -> Result<Vec<Value>, StorageError> {
        let (_, entry) =
            subxt_core::storage::lookup_storage_entry_details(self.pallet, self.entry, metadata)
                .map_err(|e| self.err(e))?;
        let hashers =
            StorageHashers::new(entry.entry_type(), metadata.types()).map_err(|e| self.err(e))?;
        // Past the 32-byte root: twox128(pallet) ‖ twox128(entry).
        let mut rest = storage_key
            .get(32..)
            .ok_or_else(|| self.err("a storage key shorter than its 32-byte root"))?;
        let keys = <Vec<Value> as StorageKey>::decode_storage_key(
            &mut rest,
            &mut hashers.iter(),
            metadata.types(),
        )
        .map_err(|e| self.err(format!("undecodable key {}: {e}", to_hex(storage_key))))?;
        Ok(keys)
    }
}

/// Reads at one block.
pub struct Reader<'a> {
    pub rpc: &'a RpcClient,
    pub metadata: Metadata,
    /// The block hash every read is made at.
    pub at: [u8; 32],
}

impl Reader<'_> {
    fn at_hex(&self) -> String {
        to_hex(&self.at)
    }

    /// The raw value at `key`, or `None` when absent.
    pub fn raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let v: Option<String> = self
            .rpc
            .call("state_getStorage", json!([to_hex(key), self.at_hex()]))?;
        v.map(|h| from_hex("state_getStorage", &h).map_err(Into::into))
            .transpose()
    }

    /// The value of `item` at `keys` decoded as `T`, or `None` when the key is absent.
    pub fn get_opt<T: DecodeAsType>(
        &self,
        item: Item,
        keys: Vec<Value>,
    ) -> Result<Option<T>, StorageError> {
        let key = item.key(&self.metadata, keys)?;
        self.raw(&key)?
            .map(|bytes| item.decode(&self.metadata, &bytes))
            .transpose()
    }

    /// The value of `item` at `keys` decoded as `T`, or the item's default when absent.
    pub fn get<T: DecodeAsType>(&self, item: Item, keys: Vec<Value>) -> Result<T, StorageError> {
        let key = item.key(&self.metadata, keys)?;
        match self.raw(&key)? {
            Some(bytes) => item.decode(&self.metadata, &bytes),
            None => item.default(&self.metadata),
        }
    }

    /// Values at many keys of one item, in order, each absent one replaced by the default.
    pub fn get_many<T: DecodeAsType>(
        &self,
        item: Item,
        keys: Vec<Vec<Value>>,
    ) -> Result<Vec<T>, StorageError> {
        let encoded = keys
            .into_iter()
            .map(|k| item.key(&self.metadata, k))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = self.raw_many(&encoded)?;
        raw.into_iter()
            .map(|bytes| match bytes {
                Some(b) => item.decode(&self.metadata, &b),
                None => item.default(&self.metadata),
            })
            .collect()
    }

    /// Raw values at many keys, in order (`state_queryStorageAt`, a page at a time).
    pub fn raw_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        const METHOD: &str = "state_queryStorageAt";
        let mut out = Vec::with_capacity(keys.len());
        for page in keys.chunks(PAGE) {
            let hex_keys: Vec<String> = page.iter().map(|k| to_hex(k)).collect();
            let sets: Vec<Json> = self
                .rpc
                .call(METHOD, json!([hex_keys.clone(), self.at_hex()]))?;
            // The node answers one change set for the block; map key → value.
            let mut found = std::collections::HashMap::new();
            for set in &sets {
                let changes = set.get("changes").and_then(Json::as_array).ok_or_else(|| {
                    RpcError::BadAnswer {
                        method: METHOD.into(),
                        message: "a change set without `changes`".into(),
                    }
                })?;
                for c in changes {
                    let pair = c.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
                        RpcError::BadAnswer {
                            method: METHOD.into(),
                            message: format!("{c} is not a [key, value] pair"),
                        }
                    })?;
                    let key = pair[0].as_str().unwrap_or_default().to_ascii_lowercase();
                    let value = match &pair[1] {
                        Json::Null => None,
                        Json::String(h) => Some(from_hex(METHOD, h)?),
                        other => {
                            return Err(RpcError::BadAnswer {
                                method: METHOD.into(),
                                message: format!("value {other} is neither hex nor null"),
                            }
                            .into())
                        }
                    };
                    found.insert(key, value);
                }
            }
            for k in &hex_keys {
                out.push(found.remove(&k.to_ascii_lowercase()).flatten());
            }
        }
        Ok(out)
    }

    /// Every full key under `prefix`, in the node's (lexicographic) order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        const METHOD: &str = "state_getKeysPaged";
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            let start = out.last().map(|k| to_hex(k));
            let page: Vec<String> = self
                .rpc
                .call(METHOD, json!([to_hex(prefix), PAGE, start, self.at_hex()]))?;
            let n = page.len();
            for h in page {
                let k = from_hex(METHOD, &h)?;
                if !k.starts_with(prefix) {
                    return Err(RpcError::BadAnswer {
                        method: METHOD.into(),
                        message: format!("key {h} is outside the prefix {}", to_hex(prefix)),
                    }
                    .into());
                }
                if out.last().is_some_and(|last| *last >= k) {
                    return Err(RpcError::BadAnswer {
                        method: METHOD.into(),
                        message: format!("keys are not in ascending order at {h}"),
                    }
                    .into());
                }
                out.push(k);
            }
            if n < PAGE {
                return Ok(out);
            }
            if out.len() >= MAX_KEYS {
                return Err(RpcError::BadAnswer {
                    method: METHOD.into(),
                    message: format!("more than {MAX_KEYS} keys under {}", to_hex(prefix)),
                }
                .into());
            }
        }
    }

    /// Every (map keys, value) of `item` under the partial `keys`, values decoded as `T`.
    pub fn iter<T: DecodeAsType>(
        &self,
        item: Item,
        keys: Vec<Value>,
    ) -> Result<Vec<(Vec<Value>, T)>, StorageError> {
        let prefix = item.key(&self.metadata, keys)?;
        let full = self.keys_with_prefix(&prefix)?;
        let values = self.raw_many(&full)?;
        let mut out = Vec::with_capacity(full.len());
        for (key, value) in full.iter().zip(values) {
            // A key listed but gone by the time of the read cannot happen at a fixed block;
            // skip it rather than invent a default.
            let Some(bytes) = value else { continue };
            out.push((
                item.decode_keys(&self.metadata, key)?,
                item.decode(&self.metadata, &bytes)?,
            ));
        }
        Ok(out)
    }
}

/// A u128 from a decoded map key (unsigned integers, or a one-field wrapper of one).
pub fn key_u128(v: &Value) -> Option<u128> {
    use subxt_core::ext::scale_value::{Composite, Primitive, ValueDef};
    match &v.value {
        ValueDef::Primitive(Primitive::U128(n)) => Some(*n),
        ValueDef::Composite(Composite::Unnamed(vs)) if vs.len() == 1 => key_u128(&vs[0]),
        ValueDef::Composite(Composite::Named(vs)) if vs.len() == 1 => key_u128(&vs[0].1),
        _ => None,
    }
}

/// 32 bytes from a decoded map key (an AccountId32 or a bare [u8; 32]).
pub fn key_account(v: &Value) -> Option<[u8; 32]> {
    use subxt_core::ext::scale_value::{Composite, Primitive, ValueDef};
    match &v.value {
        ValueDef::Composite(Composite::Unnamed(vs)) if vs.len() == 32 => {
            let mut out = [0u8; 32];
            for (o, b) in out.iter_mut().zip(vs) {
                match b.value {
                    ValueDef::Primitive(Primitive::U128(n)) if n <= 255 => *o = n as u8,
                    _ => return None,
                }
            }
            Some(out)
        }
        ValueDef::Composite(Composite::Unnamed(vs)) if vs.len() == 1 => key_account(&vs[0]),
        ValueDef::Composite(Composite::Named(vs)) if vs.len() == 1 => key_account(&vs[0].1),
        _ => None,
    }
}
