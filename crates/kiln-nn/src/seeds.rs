use kiln_tensor::random;

/// A stream of seeds from one root seed: each layer that needs randomness (initialisation,
/// dropout) takes the next one, so a model built the same way from the same root is the
/// same on every machine and device.
#[derive(Clone, Debug)]
pub struct Seeds {
    root: u64,
    taken: u64,
}

impl Seeds {
    pub fn new(root: u64) -> Self {
        Self { root, taken: 0 }
    }

    /// The next seed of the stream.
    pub fn next_seed(&mut self) -> u64 {
        self.taken += 1;
        random::derive(self.root, self.taken)
    }
}
