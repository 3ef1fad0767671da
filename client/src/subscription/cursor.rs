//! A subscription's cursor: the id it resumes after, and the rule that
//! makes delivery exactly-once for the caller.
//!
//! Ids are gap-free and increasing per room, so "delivered" is one number:
//! a message is new if and only if its id is above the cursor. Anything at
//! or below it (a replay overlapping what a previous connection delivered,
//! a server bug) is dropped and counted, never delivered twice. A gap moves
//! the cursor to just before where delivery resumes, as the server says:
//! the ids in between will never come.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wire::Gap;

/// What the caller can read about a running subscription, written by the
/// subscription as it delivers. Relaxed atomics: each value is a counter or
/// a position read on its own, never in step with another.
#[derive(Debug)]
pub(crate) struct Progress {
    /// The cursor; [`Progress::UNKNOWN`] until the start is known.
    cursor: AtomicU64,
    duplicates: AtomicU64,
}

impl Progress {
    /// No room gets anywhere near this many messages.
    const UNKNOWN: u64 = u64::MAX;

    pub(crate) fn cursor(&self) -> Option<u64> {
        Some(self.cursor.load(Ordering::Relaxed)).filter(|&id| id != Self::UNKNOWN)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

/// The cursor itself, owned by the subscription's driver, mirrored into
/// [`Progress`] for the caller.
#[derive(Debug)]
pub(crate) struct Cursor {
    position: Option<u64>,
    progress: Arc<Progress>,
}

impl Cursor {
    pub(crate) fn new(start: Option<u64>) -> Self {
        let progress = Arc::new(Progress {
            cursor: AtomicU64::new(start.unwrap_or(Progress::UNKNOWN)),
            duplicates: AtomicU64::new(0),
        });
        Cursor {
            position: start,
            progress,
        }
    }

    pub(crate) fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    pub(crate) fn position(&self) -> Option<u64> {
        self.position
    }

    /// Where a subscription that started live found the room.
    pub(crate) fn start_at(&mut self, id: u64) {
        self.move_to(id);
    }

    /// Whether the message with `id` is new; if so the cursor moves to it,
    /// if not it is counted as a duplicate.
    pub(crate) fn accept(&mut self, id: u64) -> bool {
        if self.position.is_some_and(|cursor| id <= cursor) {
            self.progress.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.move_to(id);
        true
    }

    /// Ids before `resume_from` are gone: resume just before it. This may
    /// move the cursor back (a cursor ahead of a room that lost its ids is
    /// told where the room really is).
    pub(crate) fn gap(&mut self, gap: Gap) {
        self.move_to(gap.resume_from.saturating_sub(1));
    }

    fn move_to(&mut self, id: u64) {
        self.position = Some(id);
        self.progress.cursor.store(id, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_move_the_cursor() {
        let mut cursor = Cursor::new(Some(3));
        assert!(cursor.accept(4));
        assert!(cursor.accept(6));
        assert_eq!(cursor.position(), Some(6));
        assert_eq!(cursor.progress().cursor(), Some(6));
    }

    #[test]
    fn ids_at_or_below_the_cursor_are_dropped_and_counted() {
        let mut cursor = Cursor::new(Some(5));
        assert!(!cursor.accept(5));
        assert!(!cursor.accept(2));
        assert!(cursor.accept(6));
        assert!(!cursor.accept(6));
        assert_eq!(cursor.progress().duplicates(), 3);
        assert_eq!(cursor.position(), Some(6));
    }

    #[test]
    fn a_gap_resumes_just_before_the_first_id_that_follows() {
        let mut cursor = Cursor::new(Some(3));
        cursor.gap(Gap {
            after: 3,
            resume_from: 21,
        });
        assert_eq!(cursor.position(), Some(20));
        assert!(cursor.accept(21));
    }

    #[test]
    fn a_gap_may_move_a_cursor_ahead_of_the_room_back() {
        let mut cursor = Cursor::new(Some(100));
        cursor.gap(Gap {
            after: 100,
            resume_from: 41,
        });
        assert!(cursor.accept(41));
        assert_eq!(cursor.progress().duplicates(), 0);
    }

    #[test]
    fn an_unknown_start_accepts_the_first_id_and_says_so() {
        let mut cursor = Cursor::new(None);
        assert_eq!(cursor.progress().cursor(), None);
        assert!(cursor.accept(9));
        assert_eq!(cursor.progress().cursor(), Some(9));
    }

    #[test]
    fn a_live_start_sets_where_the_room_was() {
        let mut cursor = Cursor::new(None);
        cursor.start_at(0);
        assert_eq!(cursor.progress().cursor(), Some(0));
        assert!(cursor.accept(1));
    }
}
