//! The per-packet pipeline. Pure.
