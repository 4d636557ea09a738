//! A small cache of VGG features of images that did not change between jobs (the photo's content
//! features, the styles' Gram matrices), so a new job with other weights starts at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::Result;

pub type Features = Arc<HashMap<String, Tensor>>;

pub struct FeatureCache {
    entries: HashMap<u64, Features>,
    order: VecDeque<u64>,
    capacity: usize,
    hits: usize,
}

impl FeatureCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            hits: 0,
        }
    }

    /// The entry for `key`, computed by `compute` when absent; the oldest entry is dropped when full.
    pub fn get_or_compute(
        &mut self,
        key: u64,
        compute: impl FnOnce() -> Result<HashMap<String, Tensor>>,
    ) -> Result<Features> {
        if let Some(found) = self.entries.get(&key) {
            self.hits += 1;
            return Ok(found.clone());
        }
        let value = Arc::new(compute()?);
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.order.push_back(key);
        self.entries.insert(key, value.clone());
        Ok(value)
    }

    /// How many lookups were served from the cache (for tests and logs).
    pub fn hits(&self) -> usize {
        self.hits
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

impl Default for FeatureCache {
    fn default() -> Self {
        Self::new(16)
    }
}
