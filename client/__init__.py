"""The crossfarm CLI: pack a crate, send what the farm lacks, follow the logs, fetch artifacts."""
