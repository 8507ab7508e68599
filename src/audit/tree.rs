//! The Merkle tree over the audit records (RFC 6962 / RFC 9162 hashing): the writer's right edge, roots and proofs.
//!
//! Each record is a leaf: its hash is `SHA-256(0x00 || line)`, where `line`
//! is the record's stored JSON line without its newline; an interior node is
//! `SHA-256(0x01 || left || right)`. The record with `seq` s is leaf s - 1,
//! so the tree's size is the number of records ever written, across files,
//! days and restarts.
//!
//! [`Edge`] is what the writer keeps: the roots of the complete subtrees on
//! the tree's right edge (one per set bit of the size, at most 64 hashes),
//! enough to append a leaf in O(log n) and to compute the root. [`Tree`] holds
//! every hash of a tree built offline, for inclusion and consistency proofs;
//! the hashing and the proofs are those of the `tlog_tiles` crate (the Go
//! `sumdb/tlog` algorithms), so that any C2SP tlog client checks them.

use tlog_tiles::{HashReader, node_hash, record_hash};

pub use tlog_tiles::{EMPTY_HASH, Hash};

/// The leaf hash of a record's stored line (without its newline).
pub fn leaf_hash(line: &[u8]) -> Hash {
    record_hash(line)
}

/// The right edge of a tree: its size, and the root of each complete subtree
/// along the edge, largest (leftmost) first.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    size: u64,
    hashes: Vec<Hash>,
}

/// An edge whose hash count does not match its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tree of size {size} has {expected} edge hashes, not {found}")]
pub struct EdgeError {
    pub size: u64,
    pub expected: u32,
    pub found: usize,
}

impl Default for Edge {
    fn default() -> Self {
        Edge::empty()
    }
}

impl Edge {
    /// The edge of the empty tree.
    pub fn empty() -> Edge {
        Edge {
            size: 0,
            hashes: Vec::new(),
        }
    }

    /// An edge read back from storage (a retention checkpoint): one hash per
    /// set bit of `size`, largest subtree first.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Edge, EdgeError> {
        let expected = size.count_ones();
        if hashes.len() != expected as usize {
            return Err(EdgeError {
                size,
                expected,
                found: hashes.len(),
            });
        }
        Ok(Edge { size, hashes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots along the right edge, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash: merges the complete subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // A set low bit is a complete subtree of the same height to the left.
            if let Some(left) = self.hashes.pop() {
                hash = node_hash(left, hash);
            }
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree's root hash (RFC 6962 MTH); the hash of the empty string for size 0.
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let Some(&last) = hashes.next() else {
            return EMPTY_HASH;
        };
        hashes.fold(last, |right, &left| node_hash(left, right))
    }
}

/// Every hash of a tree, stored in `tlog_tiles`' order: for offline proofs.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    size: u64,
    stored: Vec<Hash>,
}

/// A proof asked for outside the tree, or one that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof does not hold")]
    Invalid,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.stored.get(i).copied())
                    .ok_or(tlog_tiles::tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// Appends one leaf hash, storing the interior hashes it completes.
    pub fn push(&mut self, leaf: Hash) {
        // Reading only hashes already stored cannot fail.
        if let Ok(hashes) = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf, self) {
            self.stored.extend(hashes);
            self.size += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree's first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size {
            return Err(ProofError::OutOfRange {
                index: size,
                size: self.size,
            });
        }
        tlog_tiles::tree_hash(size, self).map_err(|_| ProofError::Invalid)
    }

    /// The proof that leaf `index` is in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size {
            return Err(ProofError::OutOfRange { index, size });
        }
        tlog_tiles::prove_record(size, index, self).map_err(|_| ProofError::Invalid)
    }

    /// The proof that the tree of `old` leaves is a prefix of the tree of `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if old > new || new > self.size {
            return Err(ProofError::OutOfRange {
                index: old,
                size: new,
            });
        }
        tlog_tiles::prove_tree(new, old, self).map_err(|_| ProofError::Invalid)
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`.
pub fn check_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), ProofError> {
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf)
        .map_err(|_| ProofError::Invalid)
}

/// Checks that the tree (`old`, `old_root`) is a prefix of (`new`, `new_root`).
pub fn check_consistency(
    proof: &[Hash],
    new: u64,
    new_root: Hash,
    old: u64,
    old_root: Hash,
) -> Result<(), ProofError> {
    tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root)
        .map_err(|_| ProofError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("record {i}").as_bytes()))
            .collect()
    }

    /// RFC 6962's recursive definition, written out independently.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_HASH,
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_edge_root_is_rfc_6962_at_every_size_up_to_70() {
        let all = leaves(70);
        let mut edge = Edge::empty();
        let mut tree = Tree::default();
        assert_eq!(edge.root(), mth(&[]));
        for (i, &leaf) in all.iter().enumerate() {
            edge.push(leaf);
            tree.push(leaf);
            let n = i + 1;
            assert_eq!(edge.root(), mth(&all[..n]), "size {n}");
            assert_eq!(tree.root_at(n as u64).unwrap(), edge.root(), "size {n}");
            assert_eq!(edge.hashes().len() as u32, (n as u64).count_ones());
        }
    }

    #[test]
    fn the_leaf_hash_is_sha256_of_zero_and_the_line() {
        use sha2::{Digest, Sha256};
        let line = br#"{"seq":1}"#;
        let mut expected = vec![0u8];
        expected.extend_from_slice(line);
        assert_eq!(
            leaf_hash(line).0.as_slice(),
            Sha256::digest(&expected).as_slice()
        );
    }

    #[test]
    fn an_edge_read_back_continues_the_same_tree() {
        let all = leaves(13);
        let mut edge = Edge::empty();
        all[..9].iter().for_each(|&l| edge.push(l));
        let mut restored = Edge::from_parts(9, edge.hashes().to_vec()).unwrap();
        all[9..].iter().for_each(|&l| restored.push(l));
        assert_eq!(restored.root(), mth(&all));
        assert!(Edge::from_parts(9, vec![EMPTY_HASH]).is_err());
    }

    #[test]
    fn inclusion_and_consistency_proofs_hold_and_fail_on_another_leaf() {
        let all = leaves(21);
        let mut tree = Tree::default();
        all.iter().for_each(|&l| tree.push(l));
        let root = tree.root_at(21).unwrap();
        for index in [0u64, 7, 20] {
            let proof = tree.inclusion_proof(index, 21).unwrap();
            check_inclusion(&proof, 21, root, index, all[index as usize]).unwrap();
            assert_eq!(
                check_inclusion(&proof, 21, root, index, leaf_hash(b"forged")),
                Err(ProofError::Invalid)
            );
        }
        let old = tree.root_at(8).unwrap();
        let proof = tree.consistency_proof(8, 21).unwrap();
        check_consistency(&proof, 21, root, 8, old).unwrap();
        assert!(check_consistency(&proof, 21, root, 8, all[0]).is_err());
    }
}
