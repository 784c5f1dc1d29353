//! The transformer language model koth scores and trains.
