//! The dataset: five fixed dossiers plus generated ones, looked up by number or NIR.

use std::collections::HashMap;

use super::fixed;
use super::generate;
use super::people::{self, Identity};
use super::rng::Rng;

/// Generated dossiers are numbered from here: `2000000 + index`.
const FIRST_GENERATED: u32 = 2_000_000;

/// The highest number a generated dossier may take (9999999 is the documented
/// "not found" case and is never used).
const LAST_GENERATED: u32 = 9_999_998;

const STREAM_IDENTITY: u64 = 1;

/// Every numéro in the dataset is written with this many digits.
const NUMERO_LEN: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Fixed(usize),
    Generated(u32),
}

/// A deterministic synthetic CAF dataset.
///
/// Generated dossiers are not stored: each lookup rebuilds the dossier from
/// `(seed, index)` and its identity, which keeps start-up fast and memory small
/// (about 100 bytes per dossier). The same seed always gives the same records.
pub struct Dataset {
    seed: u64,
    identities: Vec<Identity>,
    by_nir: HashMap<[u8; 15], Slot>,
    /// Every numéro, fixed ones first, as consecutive 7-digit runs.
    numeros: String,
}

/// Shows the size only: the dataset holds NIRs, which must never reach a log.
impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("seed", &self.seed)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// The number of generated dossiers `caf-broker simulate` and the embedded
    /// upstream use unless told otherwise.
    pub const DEFAULT_RECORDS: usize = 10_000;

    /// The seed used unless told otherwise.
    pub const DEFAULT_SEED: u64 = 42;

    /// The most generated dossiers a dataset can hold (numbers 2000000 to 9999998).
    pub const MAX_RECORDS: usize = (LAST_GENERATED - FIRST_GENERATED + 1) as usize;

    /// Builds a dataset of the five fixed dossiers and `records` generated ones
    /// (at most [`Dataset::MAX_RECORDS`]; more are ignored).
    pub fn generate(seed: u64, records: usize) -> Dataset {
        let records = records.min(Self::MAX_RECORDS);
        let mut by_nir = HashMap::with_capacity(records + fixed::NIRS.len());
        let mut numeros = String::with_capacity((records + fixed::NUMEROS.len()) * NUMERO_LEN);
        for (position, (nir, numero)) in fixed::NIRS.iter().zip(fixed::NUMEROS).enumerate() {
            if let Ok(key) = <[u8; 15]>::try_from(nir.as_bytes()) {
                by_nir.insert(key, Slot::Fixed(position));
            }
            numeros.push_str(numero);
        }
        let mut identities = Vec::with_capacity(records);
        for index in 0..records {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            // Redraw until the NIR is new; collisions are rare and the redraw is
            // itself deterministic, so the same seed keeps the same identities.
            let identity = (0u64..)
                .filter_map(|attempt| {
                    people::identity(&mut Rng::for_stream(
                        seed,
                        &[STREAM_IDENTITY, u64::from(index), attempt],
                    ))
                })
                .find(|identity| !by_nir.contains_key(&identity.nir));
            let Some(identity) = identity else { break };
            by_nir.insert(identity.nir, Slot::Generated(index));
            identities.push(identity);
            numeros.push_str(&(FIRST_GENERATED + index).to_string());
        }
        Dataset {
            seed,
            identities,
            by_nir,
            numeros,
        }
    }

    /// How many dossiers the dataset holds, fixed ones included.
    pub fn len(&self) -> usize {
        fixed::NUMEROS.len() + self.identities.len()
    }

    /// Never true: the fixed dossiers are always there.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seed the dataset was generated from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every dossier number, the fixed ones first.
    pub fn numeros(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.numeros.get(i * NUMERO_LEN..(i + 1) * NUMERO_LEN))
    }

    /// The dossier with this number, serialised as the CAF sends it.
    pub fn json_by_numero(&self, numero: &str) -> Option<Vec<u8>> {
        self.by_numero(numero)
            .and_then(|r| serde_json::to_vec(&r).ok())
    }

    /// The dossier of this NIR, serialised as the CAF sends it.
    pub fn json_by_nir(&self, nir: &str) -> Option<Vec<u8>> {
        self.by_nir(nir).and_then(|r| serde_json::to_vec(&r).ok())
    }

    /// The dossier with this number, as the CAF serves it.
    pub fn by_numero(&self, numero: &str) -> Option<serde_json::Value> {
        // Numbers are matched as written: no sign, no leading zero.
        if numero.is_empty()
            || numero.len() > NUMERO_LEN
            || numero.starts_with('0')
            || !numero.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n: u32 = numero.parse().ok()?;
        if let Some(position) = fixed::NUMEROS.iter().position(|f| *f == numero) {
            return self.record(Slot::Fixed(position));
        }
        let index = n.checked_sub(FIRST_GENERATED)?;
        self.record(Slot::Generated(index))
    }

    /// The dossier of the allocataire with this NIR (Corsican `2a`/`2b` accepted
    /// in either case), as the CAF serves it.
    pub fn by_nir(&self, nir: &str) -> Option<serde_json::Value> {
        let key = <[u8; 15]>::try_from(nir.to_ascii_uppercase().as_bytes()).ok()?;
        self.record(*self.by_nir.get(&key)?)
    }

    fn record(&self, slot: Slot) -> Option<serde_json::Value> {
        match slot {
            Slot::Fixed(position) => fixed::dossier(position).cloned(),
            Slot::Generated(index) => {
                let identity = self.identities.get(usize::try_from(index).ok()?)?;
                let record = generate::dossier(
                    self.seed,
                    u64::from(index),
                    (FIRST_GENERATED + index).to_string(),
                    identity,
                );
                serde_json::to_value(record).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_dataset_stops_just_below_the_not_found_number() {
        assert_eq!(
            FIRST_GENERATED as usize + Dataset::MAX_RECORDS - 1,
            9_999_998
        );
        assert_eq!(LAST_GENERATED.to_string().len(), NUMERO_LEN);
    }

    #[test]
    fn debug_output_shows_no_nir() {
        let shown = format!("{:?}", Dataset::generate(1, 3));
        assert!(
            !shown.contains("295109912611193") && shown.contains("len: 8"),
            "{shown}"
        );
    }
}
