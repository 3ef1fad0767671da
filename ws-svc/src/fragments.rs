//! Reassembly of fragmented messages (RFC 6455, 5.4), within a size limit.
//!
//! actix-ws hands continuation frames over as they come; the parts are
//! collected here, and the whole message is bounded by the same limit as a
//! single frame, so fragmenting cannot be used to send more.

use actix_ws::Item;
use bytes::{Bytes, BytesMut};

#[derive(Debug)]
pub(crate) struct Fragments {
    limit: usize,
    /// The text received so far, `None` outside a fragmented message.
    parts: Option<BytesMut>,
}

/// What a continuation frame completed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// More fragments to come.
    Pending,
    /// A whole text message (not yet checked for UTF-8).
    Text(Bytes),
    /// A fragmented binary message begins: not part of this API.
    Binary,
}

/// Why reassembly failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FragmentError {
    TooBig,
    /// A continuation without a start, or a start inside a message.
    OutOfOrder,
}

impl Fragments {
    pub(crate) fn new(limit: usize) -> Self {
        Fragments { limit, parts: None }
    }

    pub(crate) fn push(&mut self, item: Item) -> Result<Assembled, FragmentError> {
        match item {
            Item::FirstBinary(_) => Ok(Assembled::Binary),
            Item::FirstText(bytes) => {
                if self.parts.is_some() {
                    return Err(FragmentError::OutOfOrder);
                }
                self.parts = Some(BytesMut::new());
                self.append(&bytes)?;
                Ok(Assembled::Pending)
            }
            Item::Continue(bytes) => {
                self.append(&bytes)?;
                Ok(Assembled::Pending)
            }
            Item::Last(bytes) => {
                self.append(&bytes)?;
                let whole = self.parts.take().ok_or(FragmentError::OutOfOrder)?;
                Ok(Assembled::Text(whole.freeze()))
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FragmentError> {
        let parts = self.parts.as_mut().ok_or(FragmentError::OutOfOrder)?;
        if parts.len() + bytes.len() > self.limit {
            self.parts = None;
            return Err(FragmentError::TooBig);
        }
        parts.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn fragments_are_joined_in_order() {
        let mut fragments = Fragments::new(100);
        assert_eq!(
            fragments.push(Item::FirstText(text("{\"type\":"))),
            Ok(Assembled::Pending)
        );
        assert_eq!(
            fragments.push(Item::Continue(text("\"ping\""))),
            Ok(Assembled::Pending)
        );
        assert_eq!(
            fragments.push(Item::Last(text("}"))),
            Ok(Assembled::Text(text("{\"type\":\"ping\"}")))
        );
    }

    #[test]
    fn the_whole_message_is_bounded_by_the_limit() {
        let mut fragments = Fragments::new(10);
        assert_eq!(
            fragments.push(Item::FirstText(text("123456"))),
            Ok(Assembled::Pending)
        );
        assert_eq!(
            fragments.push(Item::Continue(text("789012"))),
            Err(FragmentError::TooBig)
        );
    }

    #[test]
    fn a_continuation_without_a_start_is_out_of_order() {
        let mut fragments = Fragments::new(10);
        assert_eq!(
            fragments.push(Item::Continue(text("x"))),
            Err(FragmentError::OutOfOrder)
        );
        assert_eq!(
            fragments.push(Item::Last(text("x"))),
            Err(FragmentError::OutOfOrder)
        );
    }

    #[test]
    fn a_fragmented_binary_message_is_reported_at_once() {
        let mut fragments = Fragments::new(10);
        assert_eq!(
            fragments.push(Item::FirstBinary(text("x"))),
            Ok(Assembled::Binary)
        );
    }
}
