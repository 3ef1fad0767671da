//! The `text/event-stream` format, parsed as the HTML standard says
//! ("Server-sent events", 9.2.6): bytes in, events out.
//!
//! Written here rather than taken from a general SSE crate because its cost
//! per event matters: a program receiving tens of thousands of events a
//! second shares the machine with the server it talks to. This parser
//! copies each chunk once, scans it for line ends with `memchr` (many
//! bytes at a time), and reuses its buffers:
//! after the first few events it allocates nothing, and hands each event
//! over as borrowed text.
//!
//! Lines end with CRLF, LF or CR (also across chunk boundaries). A blank
//! line dispatches the event; `:` starts a comment; `data` lines are joined
//! with `\n`; `id` persists across events; an event without data is not
//! dispatched; `retry` and unknown fields are ignored (this client has its
//! own backoff). Invalid UTF-8 becomes U+FFFD.

use std::borrow::Cow;

/// The longest line, and the most data one event may gather: far more
/// than any event of this API (a message of a few thousand characters),
/// and a bound on what a broken server can make the client hold.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// One event, borrowed from the parser until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dispatched<'a> {
    /// The event's type: its `event` field, or `"message"`.
    pub(crate) event: &'a str,
    pub(crate) data: &'a str,
    /// The last `id` the stream set (on this event or an earlier one).
    pub(crate) id: &'a str,
}

/// The stream broke the format's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event stream line or event longer than {MAX_EVENT_BYTES} bytes")]
pub(crate) struct TooLong;

#[derive(Debug, Default)]
pub(crate) struct EventParser {
    lines: Lines,
    fields: Fields,
}

impl EventParser {
    /// Adds bytes as they arrived.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.lines.feed(chunk);
    }

    /// The next whole event in what was fed, if there is one.
    pub(crate) fn next_event(&mut self) -> Result<Option<Dispatched<'_>>, TooLong> {
        self.fields.start_over_if_dispatched();
        while let Some(line) = self.lines.next_line()? {
            if self.fields.add(line)? {
                return Ok(Some(self.fields.dispatched()));
            }
        }
        Ok(None)
    }
}

/// Bytes received and not yet split into lines.
#[derive(Debug, Default)]
struct Lines {
    buffer: Vec<u8>,
    /// Where the first line not yet handed out starts.
    start: usize,
    /// The last line ended with CR: an LF right after it belongs to it.
    after_cr: bool,
    /// The stream's first bytes were seen (a leading BOM is dropped).
    begun: bool,
}

impl Lines {
    const BOM: &'static [u8] = b"\xEF\xBB\xBF";

    fn feed(&mut self, mut chunk: &[u8]) {
        if !self.begun && !chunk.is_empty() {
            self.begun = true;
            chunk = chunk.strip_prefix(Self::BOM).unwrap_or(chunk);
        }
        // Keep only what is not handed out yet: at most a partial line.
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole line, without its end.
    fn next_line(&mut self) -> Result<Option<&[u8]>, TooLong> {
        if self.after_cr && self.start < self.buffer.len() {
            self.after_cr = false;
            if self.buffer[self.start] == b'\n' {
                self.start += 1;
            }
        }
        let rest = &self.buffer[self.start..];
        let Some(length) = memchr::memchr2(b'\n', b'\r', rest) else {
            return if rest.len() > MAX_EVENT_BYTES {
                Err(TooLong)
            } else {
                Ok(None)
            };
        };
        self.after_cr = rest[length] == b'\r';
        let line = self.start..self.start + length;
        self.start += length + 1;
        Ok(Some(&self.buffer[line]))
    }
}

/// The fields of the event being read. The strings keep their capacity
/// from one event to the next.
#[derive(Debug, Default)]
struct Fields {
    event: String,
    data: String,
    id: String,
    /// The last call returned an event borrowing these: clear them first.
    dispatched: bool,
}

impl Fields {
    fn start_over_if_dispatched(&mut self) {
        if std::mem::take(&mut self.dispatched) {
            self.event.clear();
            self.data.clear();
        }
    }

    /// Takes one line; `true` when it completed an event.
    fn add(&mut self, line: &[u8]) -> Result<bool, TooLong> {
        if line.is_empty() {
            return Ok(self.end_of_event());
        }
        if line[0] == b':' {
            return Ok(false);
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => {
                self.event.clear();
                self.event.push_str(&text(value));
            }
            b"data" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    return Err(TooLong);
                }
                self.data.push_str(&text(value));
                self.data.push('\n');
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.push_str(&text(value));
            }
            _ => {}
        }
        Ok(false)
    }

    /// A blank line: the event is complete if it has data; without data
    /// it is dropped.
    fn end_of_event(&mut self) -> bool {
        if self.data.is_empty() {
            self.event.clear();
            return false;
        }
        self.data.pop(); // the `\n` after the last data line
        self.dispatched = true;
        true
    }

    fn dispatched(&self) -> Dispatched<'_> {
        Dispatched {
            event: if self.event.is_empty() {
                "message"
            } else {
                &self.event
            },
            data: &self.data,
            id: &self.id,
        }
    }
}

/// The bytes as text: valid UTF-8 (always, from this API's servers) is
/// checked by the fast validator; anything else is repaired.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event in `chunks`, as owned `(event, data, id)`.
    fn parse(chunks: &[&[u8]]) -> Vec<(String, String, String)> {
        let mut parser = EventParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            while let Some(event) = parser.next_event().expect("within limits") {
                events.push((event.event.into(), event.data.into(), event.id.into()));
            }
        }
        events
    }

    fn event(event: &str, data: &str, id: &str) -> (String, String, String) {
        (event.into(), data.into(), id.into())
    }

    #[test]
    fn a_message_event_of_this_api() {
        let events = parse(&[b"retry: 3000\n\nid: 42\nevent: message\ndata: {\"id\":42}\n\n"]);
        assert_eq!(events, [event("message", "{\"id\":42}", "42")]);
    }

    #[test]
    fn comments_and_events_without_data_are_not_dispatched() {
        assert!(parse(&[b": keepalive\n\nevent: gap\n\n"]).is_empty());
    }

    #[test]
    fn an_event_split_anywhere_across_chunks_is_the_same_event() {
        let stream = b"id: 7\r\nevent: gap\r\ndata: {\"after\":3}\r\n\r\n";
        for split in 0..stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(
                parse(&[first, second]),
                [event("gap", "{\"after\":3}", "7")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn lines_may_end_with_lf_cr_or_crlf() {
        let events = parse(&[b"data: a\rdata: b\r\ndata: c\n\r"]);
        assert_eq!(events, [event("message", "a\nb\nc", "")]);
    }

    #[test]
    fn a_field_without_a_colon_or_space_is_read_as_the_standard_says() {
        let events = parse(&[b"data\ndata:x\ndata:  y\n\n"]);
        assert_eq!(events, [event("message", "\nx\n y", "")]);
    }

    #[test]
    fn the_id_persists_and_the_type_does_not() {
        let events = parse(&[b"id: 1\nevent: gap\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events, [event("gap", "a", "1"), event("message", "b", "1")]);
    }

    #[test]
    fn a_leading_bom_and_unknown_fields_are_ignored() {
        let events = parse(&[b"\xEF\xBB\xBFdata: a\nfoo: bar\nretry: x\n\n"]);
        assert_eq!(events, [event("message", "a", "")]);
    }

    #[test]
    fn invalid_utf8_becomes_the_replacement_character() {
        let events = parse(&[b"data: a\xFFb\n\n"]);
        assert_eq!(events, [event("message", "a\u{FFFD}b", "")]);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse(&[b"data: a\n"]).is_empty());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused() {
        let mut parser = EventParser::default();
        parser.feed(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert_eq!(parser.next_event(), Err(TooLong));
    }

    #[test]
    fn data_longer_than_the_limit_is_refused() {
        let mut parser = EventParser::default();
        let line = format!("data: {}\n", "x".repeat(1000));
        for _ in 0..=MAX_EVENT_BYTES / 1000 {
            parser.feed(line.as_bytes());
        }
        assert_eq!(parser.next_event(), Err(TooLong));
    }
}
