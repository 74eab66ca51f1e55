//! Owns mapping one answer onto an entry's fixed slots (pure): an address
//! already in a slot stays there (its connections, counters and health
//! state stay with it), a draining one that comes back is revived, a new one
//! takes an empty slot, and a slot whose address left the answer drains.

use super::Member;
use std::net::SocketAddr;

/// A slot as the master last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// No address; never picked.
    Empty,
    /// Takes new connections.
    Active(SocketAddr),
    /// Left the answer: open connections finish, nothing new.
    Draining(SocketAddr),
}

/// What to do to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this member into an empty slot and activate it.
    Fill(usize, Member),
    /// The slot keeps (or gets back) its address; refresh weight and tier.
    Keep(usize, Member),
    /// Stop giving the slot new connections.
    Drain(usize),
}

/// The changes that make `slots` hold `members` (deduplicated by address,
/// first kept), and how many members found no free slot.
pub fn assign(slots: &[SlotState], members: &[Member]) -> (Vec<Change>, usize) {
    let mut wanted: Vec<&Member> = Vec::new();
    for m in members {
        if !wanted.iter().any(|w| w.addr == m.addr) {
            wanted.push(m);
        }
    }
    let mut changes = Vec::new();
    let mut placed = vec![false; wanted.len()];
    let mut taken = vec![false; slots.len()];
    for (i, slot) in slots.iter().enumerate() {
        let addr = match slot {
            SlotState::Active(a) | SlotState::Draining(a) => *a,
            SlotState::Empty => continue,
        };
        match wanted.iter().position(|m| m.addr == addr) {
            Some(w) if !placed[w] => {
                placed[w] = true;
                taken[i] = true;
                changes.push(Change::Keep(i, wanted[w].clone()));
            }
            _ => {
                taken[i] = true;
                if matches!(slot, SlotState::Active(_)) {
                    changes.push(Change::Drain(i));
                }
            }
        }
    }
    let mut free = (0..slots.len()).filter(|&i| !taken[i] && slots[i] == SlotState::Empty);
    let mut overflow = 0;
    for (w, m) in wanted.iter().enumerate() {
        if placed[w] {
            continue;
        }
        match free.next() {
            Some(i) => changes.push(Change::Fill(i, (*m).clone())),
            None => overflow += 1,
        }
    }
    (changes, overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: &str) -> Member {
        Member {
            addr: a.parse().expect("addr"),
            weight: None,
            backup: false,
        }
    }

    fn active(a: &str) -> SlotState {
        SlotState::Active(a.parse().expect("addr"))
    }

    #[test]
    fn addresses_stay_in_their_slots_new_ones_fill_and_gone_ones_drain() {
        let slots = [
            active("10.0.0.1:80"),
            active("10.0.0.2:80"),
            SlotState::Empty,
        ];
        let (changes, over) = assign(&slots, &[m("10.0.0.2:80"), m("10.0.0.3:80")]);
        assert_eq!(over, 0);
        assert_eq!(
            changes,
            vec![
                Change::Drain(0),
                Change::Keep(1, m("10.0.0.2:80")),
                Change::Fill(2, m("10.0.0.3:80")),
            ]
        );
    }

    #[test]
    fn a_draining_address_that_returns_is_kept_and_slots_never_overflow() {
        let slots = [
            SlotState::Draining("10.0.0.1:80".parse().expect("a")),
            SlotState::Empty,
        ];
        let answer = [
            m("10.0.0.1:80"),
            m("10.0.0.1:80"),
            m("10.0.0.2:80"),
            m("10.0.0.3:80"),
        ];
        let (changes, over) = assign(&slots, &answer);
        assert_eq!(
            changes,
            vec![
                Change::Keep(0, m("10.0.0.1:80")),
                Change::Fill(1, m("10.0.0.2:80"))
            ]
        );
        assert_eq!(over, 1, "the third distinct address has no slot");
    }

    #[test]
    fn an_empty_answer_drains_every_slot() {
        let slots = [active("10.0.0.1:80"), SlotState::Empty];
        assert_eq!(assign(&slots, &[]), (vec![Change::Drain(0)], 0));
    }
}
