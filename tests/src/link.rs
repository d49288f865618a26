//! A deterministic lossy link: every fault the real one has, from a seed.
//!
//! ```text
//!  send(datagram) ─▶ burst window? ─▶ Gilbert–Elliott / random loss
//!                 ─▶ truncation, bit flips ─▶ duplication
//!                 ─▶ reordering (held back a few frames) ─▶ recv()
//!  inject: foreign datagrams mixed in at a given rate
//! ```
//!
//! Everything is drawn from one ChaCha8 stream, so a seed replays a run
//! exactly. The link counts what it did, so tests can check the receiver's
//! own accounting against the truth.

use std::collections::VecDeque;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two-state burst loss: in the bad state frames are lost with
/// `loss_in_bad`; in the good state with the profile's random `loss`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance per frame of going from good to bad.
    pub good_to_bad: f64,
    /// Chance per frame of going from bad back to good.
    pub bad_to_good: f64,
    /// Loss probability while bad.
    pub loss_in_bad: f64,
}

/// What the link does to traffic. All probabilities are per datagram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkProfile {
    /// Independent random loss.
    pub loss: f64,
    /// Optional burst loss on top.
    pub burst: Option<GilbertElliott>,
    /// Drop every datagram whose index (from 0) falls in this range.
    pub blackout: Option<std::ops::Range<u64>>,
    /// Chance a datagram is held back and delivered after later ones.
    pub reorder: f64,
    /// How many later datagrams may overtake a held-back one (at most).
    pub reorder_depth: usize,
    /// Chance a datagram is delivered twice.
    pub duplicate: f64,
    /// Chance a datagram is cut short.
    pub truncate: f64,
    /// Chance a datagram has one to four bits flipped.
    pub bit_flip: f64,
    /// Chance, per datagram sent, that a foreign one is injected as well.
    pub inject: f64,
}

/// What the link did, for checking the receiver's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Datagrams offered.
    pub sent: u64,
    /// Datagrams lost (random, burst or blackout).
    pub lost: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Datagrams held back.
    pub reordered: u64,
    /// Datagrams truncated.
    pub truncated: u64,
    /// Datagrams with flipped bits.
    pub flipped: u64,
    /// Foreign datagrams injected.
    pub injected: u64,
}

/// Makes a foreign datagram: the link asks for one whenever it injects.
pub type Injector = Box<dyn FnMut(&mut ChaCha8Rng) -> Vec<u8>>;

/// A seeded, one-way, lossy link.
pub struct LossyLink {
    profile: LinkProfile,
    rng: ChaCha8Rng,
    bad: bool,
    held: Vec<(usize, Vec<u8>)>,
    out: VecDeque<Vec<u8>>,
    injector: Option<Injector>,
    counts: LinkCounts,
}

impl std::fmt::Debug for LossyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossyLink")
            .field("profile", &self.profile)
            .field("counts", &self.counts)
            .finish()
    }
}

impl LossyLink {
    /// A link with this profile, replaying the same faults for the same seed.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        Self {
            profile,
            rng: ChaCha8Rng::seed_from_u64(seed),
            bad: false,
            held: Vec::new(),
            out: VecDeque::new(),
            injector: None,
            counts: LinkCounts::default(),
        }
    }

    /// Sets what injected datagrams look like (default: random bytes).
    pub fn with_injector(mut self, injector: Injector) -> Self {
        self.injector = Some(injector);
        self
    }

    /// What the link did so far.
    pub fn counts(&self) -> LinkCounts {
        self.counts
    }

    /// Offers one datagram to the link.
    pub fn send(&mut self, datagram: &[u8]) {
        let index = self.counts.sent;
        self.counts.sent += 1;
        let p = self.profile.clone();
        if p.inject > 0.0 && self.rng.random_bool(p.inject) {
            let foreign = match self.injector.as_mut() {
                Some(make) => make(&mut self.rng),
                None => {
                    let len = self.rng.random_range(0..1600);
                    let mut v = vec![0u8; len];
                    self.rng.fill_bytes(&mut v);
                    v
                }
            };
            self.counts.injected += 1;
            self.out.push_back(foreign);
        }
        self.release_held();
        let mut lost = p.blackout.as_ref().is_some_and(|r| r.contains(&index));
        if let Some(ge) = p.burst {
            let flip = if self.bad {
                ge.bad_to_good
            } else {
                ge.good_to_bad
            };
            if self.rng.random_bool(flip) {
                self.bad = !self.bad;
            }
            if self.bad && self.rng.random_bool(ge.loss_in_bad) {
                lost = true;
            }
        }
        if p.loss > 0.0 && self.rng.random_bool(p.loss) {
            lost = true;
        }
        if lost {
            self.counts.lost += 1;
            return;
        }
        let mut d = datagram.to_vec();
        if p.truncate > 0.0 && self.rng.random_bool(p.truncate) && !d.is_empty() {
            let keep = self.rng.random_range(0..d.len());
            d.truncate(keep);
            self.counts.truncated += 1;
        }
        if p.bit_flip > 0.0 && self.rng.random_bool(p.bit_flip) && !d.is_empty() {
            for _ in 0..self.rng.random_range(1..=4) {
                let bit = self.rng.random_range(0..d.len() * 8);
                if let Some(b) = d.get_mut(bit / 8) {
                    *b ^= 1 << (bit % 8);
                }
            }
            self.counts.flipped += 1;
        }
        let copies = if p.duplicate > 0.0 && self.rng.random_bool(p.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if p.reorder > 0.0 && p.reorder_depth > 0 && self.rng.random_bool(p.reorder) {
                let wait = self.rng.random_range(1..=p.reorder_depth);
                self.counts.reordered += 1;
                self.held.push((wait, d.clone()));
            } else {
                self.out.push_back(d.clone());
            }
        }
    }

    fn release_held(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            let ready = match self.held.get_mut(i) {
                Some((wait, _)) if *wait <= 1 => true,
                Some((wait, _)) => {
                    *wait -= 1;
                    false
                }
                None => false,
            };
            if ready {
                let (_, d) = self.held.swap_remove(i);
                self.out.push_back(d);
            } else {
                i += 1;
            }
        }
    }

    /// Delivers every datagram still held back (the sender went quiet).
    pub fn flush(&mut self) {
        for (_, d) in self.held.drain(..) {
            self.out.push_back(d);
        }
    }

    /// The next datagram out of the link, if any.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }
}
