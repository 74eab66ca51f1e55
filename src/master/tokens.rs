//! Owns the master loop's mio token table: every token and token range the
//! master registers, in one place, so that a new source picks a free value
//! here instead of a number chosen in its own file (two did collide once).
//! The test at the end checks that no two overlap.
//!
//! | tokens | source |
//! | --- | --- |
//! | `0..SIGNALS.len()` | the signal pipes (`signals.rs`) |
//! | 100..=104 | control socket, upgrade, handover, admin listener, DNS waker |
//! | [`CLIENTS`] | control socket clients (`commands.rs`) |
//! | [`ADMIN_CONNS`] | admin connections (`admin/mod.rs`) |
//! | [`CHANNELS`] | worker channels, by generation and slot (`lifecycle.rs`) |
//! | [`HEALTH`] | health probes, by generation and server (`reload.rs`) |

use mio::Token;
use std::ops::Range;

/// The control socket's listener.
pub const CONTROL: Token = Token(100);
/// The new master's "ready" pipe during an upgrade.
pub const UPGRADE_READY: Token = Token(101);
/// The handover socket of an upgrade.
pub const HANDOVER: Token = Token(102);
/// The admin listener (`[admin]`).
pub const ADMIN_LISTENER: Token = Token(103);
/// The resolver thread's waker (`dns.rs`).
pub const DNS_WAKE: Token = Token(104);

/// Control socket clients: `CLIENTS.start + n % span`.
pub const CLIENTS: Range<usize> = (1 << 16)..(1 << 16) + (1 << 20);
/// Admin connections: `ADMIN_CONNS.start + n % span`.
pub const ADMIN_CONNS: Range<usize> = (1 << 28)..(1 << 28) + (1 << 20);
/// Worker channels: 65 536 generations (modulo) of 65 536 slots each.
pub const CHANNELS: Range<usize> = (1 << 32)..(1 << 32) + (1 << 32);
/// Health probes: 65 536 generations (modulo) of 2^24 servers each.
pub const HEALTH: Range<usize> = (1 << 48)..(1 << 48) + (1 << 40);

/// The `n`th token of `range` (wrapping).
pub fn nth(range: &Range<usize>, n: usize) -> Token {
    Token(range.start + n % range.len())
}

/// The channel token of worker `slot` of generation `generation`.
pub fn channel(generation: u64, slot: usize) -> Token {
    Token(CHANNELS.start + ((generation % 65_536) as usize) * (1 << 16) + slot)
}

/// The (generation modulo 65 536, slot) of a token in [`CHANNELS`].
pub fn channel_of(token: Token) -> (u64, usize) {
    let rel = token.0 - CHANNELS.start;
    ((rel >> 16) as u64, rel & 0xffff)
}

/// The first health probe token of generation `n`.
pub fn health_base(n: u64) -> usize {
    HEALTH.start + ((n % 65_536) as usize) * (1 << 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_master_tokens_overlap() {
        let fixed = [CONTROL, UPGRADE_READY, HANDOVER, ADMIN_LISTENER, DNS_WAKE];
        let signals = 0..super::super::signals::SIGNALS.len();
        let mut ranges: Vec<Range<usize>> = fixed.iter().map(|t| t.0..t.0 + 1).collect();
        ranges.push(signals);
        ranges.extend([CLIENTS, ADMIN_CONNS, CHANNELS, HEALTH]);
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.end <= b.start || b.end <= a.start, "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn channel_and_health_tokens_stay_in_their_ranges() {
        let t = channel(65_535 + 65_536 * 3, 65_535);
        assert!(CHANNELS.contains(&t.0));
        assert_eq!(channel_of(t), (65_535, 65_535));
        assert!(HEALTH.contains(&(health_base(u64::MAX) + (1 << 24) - 1)));
        assert_eq!(nth(&CLIENTS, CLIENTS.len() + 3), Token(CLIENTS.start + 3));
    }
}
