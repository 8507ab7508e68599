//! The embedded connector: the simulator's dataset, in process, with no network.

use std::sync::Arc;

use super::{CafClient, Fetch};
use crate::domain::Lookup;
use crate::simulator::Dataset;

pub struct EmbeddedCaf {
    dataset: Arc<Dataset>,
}

/// The dataset seed when `upstream.seed` is not set.
pub(super) fn default_seed() -> u64 {
    Dataset::DEFAULT_SEED
}

/// The generated dossiers when `upstream.records` is not set.
pub(super) fn default_records() -> usize {
    Dataset::DEFAULT_RECORDS
}

impl EmbeddedCaf {
    pub fn generate(seed: u64, records: usize) -> Self {
        Self {
            dataset: Arc::new(Dataset::generate(seed, records)),
        }
    }
}

impl CafClient for EmbeddedCaf {
    fn fetch<'a>(&'a self, lookup: &'a Lookup) -> Fetch<'a> {
        let record = match lookup {
            Lookup::Numero(numero) => self.dataset.by_numero(numero.as_str()),
            Lookup::Nir(nir) => self.dataset.by_nir(nir.as_str()),
        };
        Box::pin(std::future::ready(Ok(record.map(Arc::new))))
    }
}
