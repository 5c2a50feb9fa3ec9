//! Which dataset items each step sees: a fresh shuffled permutation of the dataset per epoch,
//! drawn from a seed, read in consecutive batches (a batch may span two epochs). The order is a
//! pure function of (seed, dataset length, epoch), so a checkpoint only needs the position.

use serde::{Deserialize, Serialize};

use super::prng::{mix64, TrainRng};
use crate::error::{Error, Result};

/// Where the run is in the data. Saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    /// Items of this epoch's permutation already handed out.
    pub index: usize,
}

#[derive(Debug, Clone)]
pub struct DataOrder {
    seed: u64,
    len: usize,
    position: DataPosition,
    permutation: Vec<usize>,
}

impl DataOrder {
    /// An order over a dataset of `len` items, starting at epoch 0.
    pub fn new(seed: u64, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::invalid(
                "the training dataset is empty: give at least one item",
            ));
        }
        Ok(Self {
            seed,
            len,
            position: DataPosition { epoch: 0, index: 0 },
            permutation: epoch_permutation(seed, len, 0),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an order is never built over an empty dataset.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn position(&self) -> &DataPosition {
        &self.position
    }

    /// Continue from a saved position.
    pub fn seek(&mut self, position: DataPosition) -> Result<()> {
        if position.index > self.len {
            return Err(Error::invalid(format!(
                "data position {} is past the end of a dataset of {} items: was the checkpoint \
                 made with a different dataset?",
                position.index, self.len
            )));
        }
        self.permutation = epoch_permutation(self.seed, self.len, position.epoch);
        self.position = position;
        Ok(())
    }

    /// The next `batch` item indices.
    pub fn next_batch(&mut self, batch: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            if self.position.index == self.len {
                self.position.epoch += 1;
                self.position.index = 0;
                self.permutation = epoch_permutation(self.seed, self.len, self.position.epoch);
            }
            out.push(self.permutation[self.position.index]);
            self.position.index += 1;
        }
        out
    }
}

fn epoch_permutation(seed: u64, len: usize, epoch: u64) -> Vec<usize> {
    TrainRng::new(mix64(seed) ^ mix64(epoch.wrapping_add(1))).permutation(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_item_once_in_a_new_order() {
        let mut order = DataOrder::new(7, 10).unwrap();
        let first: Vec<usize> = order.next_batch(10);
        let second: Vec<usize> = order.next_batch(10);
        assert_ne!(first, second);
        for epoch in [first, second] {
            let mut sorted = epoch.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_eq!(order.position().epoch, 1);
    }

    #[test]
    fn seeking_reproduces_the_rest_of_the_order() {
        let mut a = DataOrder::new(3, 7).unwrap();
        a.next_batch(5);
        a.next_batch(5); // spans into epoch 1
        let saved = a.position().clone();
        let mut b = DataOrder::new(3, 7).unwrap();
        b.seek(saved).unwrap();
        assert_eq!(a.next_batch(9), b.next_batch(9));
        assert!(b.seek(DataPosition { epoch: 0, index: 8 }).is_err());
        assert!(DataOrder::new(1, 0).is_err());
    }
}
