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

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(escape("/ws/plain name-ü"), "/ws/plain name-ü");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(
            escape("\u{7f}\u{9b}\u{202e}\u{2066}\u{200f}"),
            "\\u{7f}\\u{9b}\\u{202e}\\u{2066}\\u{200f}"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let s = char::from_u32(c).unwrap().to_string();
            assert!(!escape(&s).chars().any(|c| c.is_control()), "{c:#x}");
        }
    }
}
