//! Placement of one model's parameters across devices: pipeline stages of consecutive decoder
//! layers, each on its own candle [`Device`].
//!
//! The embedding lives on the first stage, the final norm and the head on the last (a tied head
//! gets its own copy of the embedding matrix there when the last stage is on another device).
//! The scoring path runs stage by stage and hands the residual stream from one stage's device to
//! the next ([`transfer`]); the per-token losses are computed where the head lives. Stages may
//! share a device ("virtual stages"): that is how one GPU, or the CPU, runs the multi-device
//! path, bit for bit the same ops as the one-stage model.
//!
//! A placement comes from an explicit list of devices and layer boundaries ([`Placement::cut`]),
//! an even split ([`Placement::even`]), or the planner ([`Placement::from_plan`], and for a duel
//! [`duel_placement`], which picks the layout). [`crate::pipeline`] runs micro-batches through
//! the stages.

use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::pipeline::Pipeline;
use crate::plan::{self, Layout, Plan, PlanRequest};

/// The king's index in a duel placement (the planner's model 0).
pub const KING: usize = 0;
/// The challenger's index in a duel placement (the planner's model 1).
pub const CHALLENGER: usize = 1;

/// One pipeline stage: a device and the decoder layers it holds.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub device: Device,
    pub layers: Range<usize>,
}

/// Where a model's parameters live: stages of consecutive, non-empty decoder-layer ranges that
/// cover every layer once, in order.
#[derive(Debug, Clone)]
pub struct Placement {
    stages: Vec<StageSpec>,
}

fn invalid(msg: String) -> ModelError {
    ModelError::Invalid(format!("placement: {msg}"))
}

impl Placement {
    /// Everything on one device: the one-stage model every other code path uses.
    pub fn single(device: Device, num_layers: usize) -> Self {
        Self {
            stages: vec![StageSpec {
                device,
                layers: 0..num_layers,
            }],
        }
    }

    /// Stages as given: at least one, each with at least one layer, contiguous from layer 0 to
    /// `num_layers`.
    pub fn new(num_layers: usize, stages: Vec<StageSpec>) -> Result<Self> {
        if stages.is_empty() {
            return Err(invalid("needs at least one stage".into()));
        }
        let mut next = 0;
        for (i, s) in stages.iter().enumerate() {
            if s.layers.start != next {
                return Err(invalid(format!(
                    "stage {i} starts at layer {}, expected {next} (stages are contiguous)",
                    s.layers.start
                )));
            }
            if s.layers.is_empty() && !(stages.len() == 1 && num_layers == 0) {
                return Err(invalid(format!(
                    "stage {i} ({}..{}) holds no layer",
                    s.layers.start, s.layers.end
                )));
            }
            next = s.layers.end;
        }
        if next != num_layers {
            return Err(invalid(format!(
                "the stages end at layer {next}, the model has {num_layers}"
            )));
        }
        Ok(Self { stages })
    }

    /// Stage `i` on `devices[i]`; `boundaries` are the first layers of stages 1.. (so
    /// `devices.len() - 1` increasing numbers inside `1..num_layers`). `cut(4, [a, b], [2])`:
    /// layers 0–1 on `a`, 2–3 on `b`.
    pub fn cut(num_layers: usize, devices: &[Device], boundaries: &[usize]) -> Result<Self> {
        if boundaries.len() + 1 != devices.len() {
            return Err(invalid(format!(
                "{} devices need {} layer boundaries, got {}",
                devices.len(),
                devices.len().saturating_sub(1),
                boundaries.len()
            )));
        }
        let mut starts = vec![0];
        starts.extend_from_slice(boundaries);
        starts.push(num_layers);
        if let Some(w) = starts.windows(2).find(|w| w[0] >= w[1]) {
            return Err(invalid(format!(
                "layer boundaries {boundaries:?} of {num_layers} layers leave a stage without \
                 a layer ({}..{})",
                w[0], w[1]
            )));
        }
        let stages = devices
            .iter()
            .enumerate()
            .map(|(i, d)| StageSpec {
                device: d.clone(),
                layers: starts[i]..starts[i + 1],
            })
            .collect();
        Self::new(num_layers, stages)
    }

    /// `devices.len()` stages of as equal a number of layers as possible (the earlier stages
    /// take the remainder).
    pub fn even(num_layers: usize, devices: &[Device]) -> Result<Self> {
        let n = devices.len();
        if n == 0 || n > num_layers {
            return Err(invalid(format!(
                "{num_layers} layers cannot be cut into {n} stages"
            )));
        }
        let mut boundaries = Vec::with_capacity(n - 1);
        let mut start = 0;
        for i in 0..n - 1 {
            start += num_layers / n + usize::from(i < num_layers % n);
            boundaries.push(start);
        }
        Self::cut(num_layers, devices, &boundaries)
    }

    /// Model `model`'s stages of a planner's `plan` (0 = king, 1 = challenger), GPU `g` being
    /// `devices[g]`.
    pub fn from_plan(plan: &Plan, model: usize, devices: &[Device]) -> Result<Self> {
        let mut stages: Vec<&plan::Stage> =
            plan.stages.iter().filter(|s| s.model == model).collect();
        stages.sort_by_key(|s| s.layers.start);
        let num_layers = stages.last().map_or(0, |s| s.layers.end);
        let specs = stages
            .iter()
            .map(|s| {
                let device = devices.get(s.gpu).ok_or_else(|| {
                    invalid(format!(
                        "the plan puts a stage on GPU {}, but only {} devices were given",
                        s.gpu,
                        devices.len()
                    ))
                })?;
                Ok(StageSpec {
                    device: device.clone(),
                    layers: s.layers.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(num_layers, specs)
    }

    pub fn stages(&self) -> &[StageSpec] {
        &self.stages
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Never true: a placement has at least one stage.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn num_layers(&self) -> usize {
        self.stages.last().map_or(0, |s| s.layers.end)
    }

    /// The embedding's device.
    pub fn first_device(&self) -> &Device {
        &self.stages[0].device
    }

    /// The head's device.
    pub fn last_device(&self) -> &Device {
        &self.stages[self.stages.len() - 1].device
    }

    /// The stage holding decoder layer `layer` (the last stage for a layer past the end).
    pub fn stage_of_layer(&self, layer: usize) -> usize {
        self.stages
            .iter()
            .position(|s| s.layers.contains(&layer))
            .unwrap_or(self.stages.len() - 1)
    }

    /// The device a parameter goes to, by its Hugging Face name: `model.layers.{i}.…` to layer
    /// i's stage, the embedding to the first stage, anything else (final norm, `lm_head`) to the
    /// last.
    pub fn device_of(&self, name: &str) -> &Device {
        if name == "model.embed_tokens.weight" {
            return self.first_device();
        }
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        match layer {
            Some(i) => &self.stages[self.stage_of_layer(i)].device,
            None => self.last_device(),
        }
    }

    /// Whether every stage is on the first stage's device.
    pub fn on_one_device(&self) -> bool {
        let first = self.first_device();
        self.stages.iter().all(|s| s.device.same_device(first))
    }

    /// One line per stage, e.g. `stage 0: layers 0..18 on Cuda(…)`.
    pub fn describe(&self) -> String {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "stage {i}: layers {}..{} on {:?}",
                    s.layers.start,
                    s.layers.end,
                    s.device.location()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Hand a tensor produced on one stage's device to the next stage's `to`. On one device it is
/// the same tensor; across devices the producer's stream is drained first (the copy is issued on
/// the destination's stream, which does not wait for the source's queued kernels), then candle
/// copies device to device (`Tensor::to_device`: a CUDA peer copy, or through the host).
pub fn transfer(x: &Tensor, to: &Device) -> Result<Tensor> {
    if x.device().same_device(to) {
        return Ok(x.clone());
    }
    x.device().synchronize()?;
    Ok(x.to_device(to)?)
}

/// The placement of one side of a duel (`side` = [`KING`] or [`CHALLENGER`]) on `devices`, and
/// the plan it came from.
///
/// - One device: the whole model on it (no plan): exactly the one-device duel.
/// - The Qwen3.5 hybrids are not cut into stages: each model goes whole on one device (the king
///   on the first, the challenger on the second).
/// - Otherwise the planner ([`plan::plan`]) places both models, for the micro-batch the
///   pipeline will score (`pipeline` at `seq_len`) in `dtype`, in both layouts, and the layout
///   whose busiest device has the lower predicted peak is taken (ties: disjoint, Teutonic's
///   choice). Device memory is not known here, so the plan is not checked against a size; with
///   an even number of devices this is disjoint (king on the first half, challenger on the
///   second), with an odd number interleaved (every device holds a stage of each).
pub fn duel_placement(
    config: &ModelConfig,
    side: usize,
    devices: &[Device],
    dtype: DType,
    seq_len: usize,
    pipeline: &Pipeline,
) -> Result<(Placement, Option<Plan>)> {
    let layers = config.num_hidden_layers;
    match devices {
        [] => return Err(invalid("no device given".into())),
        [only] => return Ok((Placement::single(only.clone(), layers), None)),
        _ => {}
    }
    if side > CHALLENGER {
        return Err(invalid(format!(
            "side {side}: a duel has a king (0) and a challenger (1)"
        )));
    }
    if config.hybrid.is_some() {
        let device = devices[side.min(devices.len() - 1)].clone();
        return Ok((Placement::single(device, layers), None));
    }
    let seq = seq_len.max(1);
    let mut best: Option<Plan> = None;
    for layout in [Layout::Disjoint, Layout::Interleaved] {
        let request = PlanRequest {
            gpus: devices.len(),
            gpu_mem_bytes: u64::MAX,
            dtype_bytes: dtype.size_in_bytes() as u64,
            batch: pipeline.rows_for(seq),
            seq,
            logits_chunk_bytes: crate::ScoreOptions::default().logits_chunk_bytes as u64,
            reserve_bytes: 0,
            layout,
        };
        let Ok(p) = plan::plan(config, &request) else {
            continue;
        };
        let busiest = |p: &Plan| p.peak_bytes.iter().copied().max().unwrap_or(0);
        if best.as_ref().is_none_or(|b| busiest(&p) < busiest(b)) {
            best = Some(p);
        }
    }
    let Some(plan) = best else {
        return Err(invalid(format!(
            "{} devices cannot hold the stages of two models of {layers} layers (the planner \
             needs at least one layer per stage)",
            devices.len()
        )));
    };
    Ok((Placement::from_plan(&plan, side, devices)?, Some(plan)))
}

/// Load one side of a duel from `dir` on `devices`: with one device, [`Model::load`] exactly as
/// before; with several, the checkpoint's config placed by [`duel_placement`] and streamed to
/// the stages ([`Model::load_placed`]). Errors are the loader's (a bad config or file is the
/// checkpoint's fault; a placement that cannot be made is [`ModelError::Invalid`]).
pub fn load_for_duel(
    dir: &Path,
    dtype: DType,
    devices: &[Device],
    side: usize,
    seq_len: usize,
) -> Result<Model> {
    if let [only] = devices {
        return Model::load(dir, dtype, only);
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let pipeline = Pipeline::default();
    let (placement, _) = duel_placement(&config, side, devices, dtype, seq_len, &pipeline)?;
    Model::load_placed(dir, dtype, placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> Vec<Device> {
        vec![Device::Cpu; n]
    }

    fn ranges(p: &Placement) -> Vec<Range<usize>> {
        p.stages().iter().map(|s| s.layers.clone()).collect()
    }

    #[test]
    fn explicit_boundaries_and_even_splits() {
        let p = Placement::cut(4, &cpus(2), &[1]).unwrap();
        assert_eq!(ranges(&p), vec![0..1, 1..4]);
        let p = Placement::even(7, &cpus(3)).unwrap();
        assert_eq!(ranges(&p), vec![0..3, 3..5, 5..7]);
        assert_eq!(p.stage_of_layer(4), 1);
        assert_eq!(p.num_layers(), 7);
        assert_eq!(ranges(&Placement::single(Device::Cpu, 3)), vec![0..3]);
    }

    #[test]
    fn bad_placements_are_refused_by_what_is_wrong() {
        let e = |r: Result<Placement>| r.unwrap_err().to_string();
        assert!(e(Placement::cut(4, &cpus(2), &[])).contains("2 devices need 1 layer boundaries"));
        assert!(e(Placement::cut(4, &cpus(3), &[2, 2])).contains("without a layer (2..2)"));
        assert!(e(Placement::cut(4, &cpus(2), &[4])).contains("without a layer (4..4)"));
        assert!(e(Placement::cut(4, &cpus(3), &[3, 2])).contains("without a layer (3..2)"));
        let gap = vec![
            StageSpec {
                device: Device::Cpu,
                layers: 0..1,
            },
            StageSpec {
                device: Device::Cpu,
                layers: 2..4,
            },
        ];
        assert!(e(Placement::new(4, gap)).contains("stage 1 starts at layer 2, expected 1"));
        assert!(e(Placement::even(2, &cpus(3))).contains("2 layers cannot be cut into 3"));
        assert!(e(Placement::new(4, vec![])).contains("at least one stage"));
        let short = vec![StageSpec {
            device: Device::Cpu,
            layers: 0..3,
        }];
        assert!(e(Placement::new(4, short)).contains("end at layer 3, the model has 4"));
    }

    #[test]
    fn parameters_go_to_their_stage() {
        let p = Placement::cut(4, &cpus(2), &[2]).unwrap();
        for (name, stage) in [
            ("model.embed_tokens.weight", 0),
            ("model.layers.1.mlp.up_proj.weight", 0),
            ("model.layers.2.input_layernorm.weight", 1),
            ("model.layers.3.mlp.experts.7.down_proj.weight", 1),
            ("model.norm.weight", 1),
            ("lm_head.weight", 1),
        ] {
            let want = &p.stages()[stage].device;
            assert!(p.device_of(name).same_device(want), "{name}");
            if let Some(i) = name
                .strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
            {
                assert_eq!(p.stage_of_layer(i.parse().unwrap()), stage, "{name}");
            }
        }
    }

    #[test]
    fn a_duel_on_one_device_is_one_stage_and_on_several_follows_the_planner() {
        let text = include_str!("../../../fixtures/bench/teutonic-lxxx.json");
        let c = ModelConfig::from_json(text, "teutonic-lxxx.json").unwrap();
        let pipe = Pipeline::default();
        let (one, plan) = duel_placement(&c, KING, &cpus(1), DType::BF16, 2048, &pipe).unwrap();
        assert_eq!((one.len(), plan.is_none()), (1, true));
        // 8 devices: disjoint (lower busiest peak), four stages per model, the challenger on
        // devices 4..8.
        let devices = cpus(8);
        for side in [KING, CHALLENGER] {
            let (p, plan) = duel_placement(&c, side, &devices, DType::BF16, 2048, &pipe).unwrap();
            let plan = plan.unwrap();
            assert_eq!(plan.layout, Layout::Disjoint);
            assert_eq!(p.len(), 4);
            assert_eq!(p.num_layers(), 36);
            let gpus: Vec<usize> = plan
                .stages
                .iter()
                .filter(|s| s.model == side)
                .map(|s| s.gpu)
                .collect();
            assert_eq!(gpus, (4 * side..4 * side + 4).collect::<Vec<_>>());
        }
        // 3 devices: disjoint would leave one idle; interleaved spreads both over all three.
        let (p, plan) = duel_placement(&c, CHALLENGER, &cpus(3), DType::BF16, 2048, &pipe).unwrap();
        assert_eq!(plan.unwrap().layout, Layout::Interleaved);
        assert_eq!(p.len(), 3);
        assert!(duel_placement(&c, 2, &devices, DType::BF16, 2048, &pipe).is_err());
        assert!(duel_placement(&c, KING, &[], DType::BF16, 2048, &pipe).is_err());
    }
}
