//! Wiring: queue → engine → nft → verdict.
