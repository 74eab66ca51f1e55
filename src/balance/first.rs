//! Owns `first`: the first eligible server in config order, so traffic fills
//! servers one after another (the view already excludes servers at
//! `max_conns`, which is what moves traffic on to the next one).

use super::{Balancer, ServerId, ServerView, eligible_from};

/// Always the lowest eligible [`ServerId`].
#[derive(Debug, Default)]
pub struct First;

impl First {
    /// New strategy.
    pub fn new() -> First {
        First
    }
}

impl Balancer for First {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        eligible_from(view, 0).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::VecView;

    #[test]
    fn first_picks_the_first_server_while_it_is_eligible() {
        let mut f = First::new();
        let mut view = VecView::uniform(3);
        view.servers[0].2 = 1_000;
        for _ in 0..5 {
            assert_eq!(f.pick(&view, 0), Some(0));
        }
    }

    #[test]
    fn first_moves_on_when_earlier_servers_are_full_or_down() {
        let mut f = First::new();
        let mut view = VecView::uniform(3);
        view.servers[0].0 = false;
        assert_eq!(f.pick(&view, 0), Some(1));
        view.servers[1].0 = false;
        assert_eq!(f.pick(&view, 0), Some(2));
        view.servers[0].0 = true;
        assert_eq!(f.pick(&view, 0), Some(0));
    }

    #[test]
    fn first_returns_none_when_nothing_is_eligible() {
        let mut f = First::new();
        assert_eq!(f.pick(&VecView::weighted(&[0, 0]), 0), None);
        assert_eq!(f.pick(&VecView::default(), 0), None);
    }
}
