//! Text that came from the sandboxed command (paths it created, socket paths and domains it asked
//! for) is escaped before it reaches a terminal, so it can never carry a control sequence.

use std::borrow::Cow;

/// Is `c` a character a terminal (or a bidi-aware viewer) would act on instead of show?
fn is_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'          // C0, including ESC, CR, LF, TAB, BEL, BS
        | '\u{7f}'                  // DEL
        | '\u{80}'..='\u{9f}'       // C1 (CSI, OSC, ... as single characters)
        | '\u{61c}'                 // Arabic letter mark
        | '\u{200e}' | '\u{200f}'   // left-to-right / right-to-left marks
        | '\u{2028}' | '\u{2029}'   // line / paragraph separators
        | '\u{202a}'..='\u{202e}'   // bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}'   // bidi isolates
    )
}

/// `s` with every control character (C0, DEL, C1, bidi controls, line separators) replaced by a
/// visible escape: `\n`, `\r`, `\t`, or `\u{XX}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text (from serde, which escapes C0 only) with DEL, C1 and bidi controls also written as
/// `\uXXXX` escapes: the same JSON value, safe to show on a terminal. (Such characters can only
/// occur inside strings, where the escape means the same character.)
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    // C0 characters are serde's own whitespace between tokens (it escapes them inside strings).
    let unsafe_char = |c: char| c >= ' ' && is_control(c);
    if !json.chars().any(unsafe_char) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Standard error for the `-v` log: each record escaped like [`escape`] (its final newline kept),
/// so a path or name in a log message cannot carry a control sequence either.
pub struct EscapedStderr;

impl std::io::Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = String::from_utf8_lossy(buf);
        let (body, newline) = match s.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (&*s, ""),
        };
        let mut err = std::io::stderr().lock();
        err.write_all(escape(body).as_bytes())?;
        err.write_all(newline.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{escape, json_for_terminal};

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(escape("/ws/plain name-ü"), "/ws/plain name-ü");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(
            escape("\u{7f}\u{9b}\u{202e}\u{2066}\u{200f}"),
            "\\u{7f}\\u{9b}\\u{202e}\\u{2066}\\u{200f}"
        );
        let j = serde_json::to_string("a\u{9b}b\u{202e}\u{1b}").unwrap();
        let safe = json_for_terminal(&j);
        assert!(
            !safe.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{safe}"
        );
        let back: String = serde_json::from_str(&safe).unwrap();
        let pretty = serde_json::to_string_pretty(&serde_json::json!({"k": ["\u{85}"]})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json_for_terminal(&pretty)).unwrap();
        assert_eq!(v["k"][0], "\u{85}");
        assert_eq!(back, "a\u{9b}b\u{202e}\u{1b}");
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let s = char::from_u32(c).unwrap().to_string();
            assert!(!escape(&s).chars().any(|c| c.is_control()), "{c:#x}");
        }
    }
}
