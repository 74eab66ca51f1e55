//! Owns what the fuzz targets share: deterministic choices derived from the
//! input itself (split points, limits, flags), so that a crash reproduces
//! from its input file alone and the seeds stay plain protocol text.

/// FNV-1a over `data`: the seed every target derives its choices from.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// xorshift64: cheap, deterministic, never stuck at zero.
#[derive(Debug)]
pub struct Prng(u64);

impl Prng {
    /// A generator seeded from `data`.
    pub fn from_input(data: &[u8]) -> Self {
        Prng(hash(data) | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.bits() % n as u64) as usize
        }
    }

    /// A coin flip.
    pub fn flip(&mut self) -> bool {
        self.bits() & 1 == 1
    }
}

/// `data` cut into consecutive pieces of `0..=max` bytes (empty pieces
/// included: a reader may well be handed nothing). Concatenated they are
/// `data` again.
pub fn pieces<'a>(data: &'a [u8], rng: &mut Prng, max: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.below(max.saturating_add(1)).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}
