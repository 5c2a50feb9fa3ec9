//! The parse tree of prompt editing (`[from:to:when]`) and alternation (`[a|b]`), as the lark
//! grammar of AUTOMATIC1111's `modules/prompt_parser.py` (`schedule_parser`) builds it:
//!
//! ```text
//! !start: (prompt | /[][():]/+)*
//! prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
//! !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//! scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
//! alternate: "[" prompt ("|" [prompt])+ "]"
//! plain: /([^\\\[\]():|]|\\.)+/
//! ```
//!
//! Only the top level may hold bare `[]():` characters; inside a bracket everything must be
//! well formed. A1111 parses with lark's Earley parser, which is ambiguous where a bracket could
//! be read as literal text or as a structure; lark then picks by hash order, so A1111's result
//! for some prompts (e.g. `[a:b:3]]`) changes between runs. This recursive descent always reads
//! a well-formed structure as a structure, which is lark's answer wherever lark is consistent.

use std::cell::Cell;

use super::attention::is_py_space;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// Text copied to every step's prompt (plain text, whitespace, brackets kept verbatim).
    Text(String),
    /// `[before:after:when]` / `[after:when]`; `when` is the NUMBER token's text.
    Scheduled {
        before: Vec<Node>,
        after: Vec<Node>,
        when: String,
    },
    /// `[a|b|c]`: one option per step, cycling.
    Alternate(Vec<Vec<Node>>),
}

/// Parses `prompt`; `None` where lark raises (a `|` outside any `[a|b]`, a `\` at the end or
/// before a newline), in which case A1111 uses the prompt unchanged for every step.
pub(crate) fn parse(prompt: &str) -> Option<Vec<Node>> {
    Parser {
        text: prompt,
        depth: Cell::new(0),
    }
    .top()
}

/// Brackets nested deeper than this are read as literal text. Keeps the recursion off the end
/// of the stack for hostile prompts; A1111 itself fails (Python's recursion limit) long before.
const MAX_NESTING: usize = 100;

struct Parser<'a> {
    text: &'a str,
    /// Nesting depth of the structure being parsed.
    depth: Cell<usize>,
}

impl Parser<'_> {
    fn char_at(&self, pos: usize) -> Option<char> {
        self.text.get(pos..).and_then(|rest| rest.chars().next())
    }

    /// `plain`'s escape `\\.`: a backslash and the next character, which may not be `\n`.
    fn escape_len(&self, pos: usize) -> Option<usize> {
        match self.char_at(pos + 1) {
            Some('\n') | None => None,
            Some(c) => Some(1 + c.len_utf8()),
        }
    }

    fn top(&self) -> Option<Vec<Node>> {
        let mut nodes = Vec::new();
        let mut pos = 0;
        while let Some(c) = self.char_at(pos) {
            match c {
                '[' | '(' => match self.structure(pos) {
                    Some(end) => {
                        nodes.extend(end.0);
                        pos = end.1;
                    }
                    None => {
                        push_text(&mut nodes, &self.text[pos..pos + 1]);
                        pos += 1;
                    }
                },
                ']' | ')' | ':' => {
                    push_text(&mut nodes, &self.text[pos..pos + 1]);
                    pos += 1;
                }
                '|' => return None,
                '\\' => {
                    let len = self.escape_len(pos)?;
                    push_text(&mut nodes, &self.text[pos..pos + len]);
                    pos += len;
                }
                _ => {
                    push_text(&mut nodes, &self.text[pos..pos + c.len_utf8()]);
                    pos += c.len_utf8();
                }
            }
        }
        Some(nodes)
    }

    /// `prompt` from `pos`: stops before `]`, `)`, `:`, `|` or the end; `None` if a nested
    /// bracket is not well formed.
    fn prompt(&self, mut pos: usize) -> Option<(Vec<Node>, usize)> {
        let mut nodes = Vec::new();
        while let Some(c) = self.char_at(pos) {
            match c {
                '[' | '(' => {
                    let (inner, end) = self.structure(pos)?;
                    nodes.extend(inner);
                    pos = end;
                }
                ']' | ')' | ':' | '|' => break,
                '\\' => {
                    let len = self.escape_len(pos)?;
                    push_text(&mut nodes, &self.text[pos..pos + len]);
                    pos += len;
                }
                _ => {
                    push_text(&mut nodes, &self.text[pos..pos + c.len_utf8()]);
                    pos += c.len_utf8();
                }
            }
        }
        Some((nodes, pos))
    }

    /// `emphasized`, `scheduled` or `alternate` starting at the bracket at `pos`.
    fn structure(&self, pos: usize) -> Option<(Vec<Node>, usize)> {
        let depth = self.depth.get();
        if depth >= MAX_NESTING {
            return None;
        }
        self.depth.set(depth + 1);
        let parsed = self.structure_within_depth(pos);
        self.depth.set(depth);
        parsed
    }

    fn structure_within_depth(&self, pos: usize) -> Option<(Vec<Node>, usize)> {
        let open = self.char_at(pos)?;
        let (first, after_first) = self.prompt(pos + 1)?;
        let next = self.char_at(after_first)?;
        if open == '(' {
            let mut nodes = vec![Node::Text("(".to_owned())];
            nodes.extend(first);
            return match next {
                ')' => {
                    push_text(&mut nodes, ")");
                    Some((nodes, after_first + 1))
                }
                ':' => {
                    let (second, after_second) = self.prompt(after_first + 1)?;
                    if self.char_at(after_second)? != ')' {
                        return None;
                    }
                    push_text(&mut nodes, ":");
                    nodes.extend(second);
                    push_text(&mut nodes, ")");
                    Some((nodes, after_second + 1))
                }
                _ => None,
            };
        }
        match next {
            ']' => {
                let mut nodes = vec![Node::Text("[".to_owned())];
                nodes.extend(first);
                push_text(&mut nodes, "]");
                Some((nodes, after_first + 1))
            }
            '|' => {
                let mut options = vec![first];
                let mut at = after_first;
                loop {
                    let (option, end) = self.prompt(at + 1)?;
                    options.push(option);
                    match self.char_at(end)? {
                        '|' => at = end,
                        ']' => return Some((vec![Node::Alternate(options)], end + 1)),
                        _ => return None,
                    }
                }
            }
            ':' => {
                if let Some((when, end)) = self.when(after_first + 1) {
                    let node = Node::Scheduled {
                        before: Vec::new(),
                        after: first,
                        when,
                    };
                    return Some((vec![node], end));
                }
                let (second, after_second) = self.prompt(after_first + 1)?;
                if self.char_at(after_second)? != ':' {
                    return None;
                }
                let (when, end) = self.when(after_second + 1)?;
                let node = Node::Scheduled {
                    before: first,
                    after: second,
                    when,
                };
                Some((vec![node], end))
            }
            _ => None,
        }
    }

    /// `[WHITESPACE] NUMBER [WHITESPACE] "]"` from `pos`: the number's text and the position
    /// after the `]`.
    fn when(&self, pos: usize) -> Option<(String, usize)> {
        let start = self.skip_spaces(pos);
        let len = signed_number_len(&self.text[start..])?;
        let end = self.skip_spaces(start + len);
        (self.char_at(end)? == ']').then(|| (self.text[start..start + len].to_owned(), end + 1))
    }

    fn skip_spaces(&self, mut pos: usize) -> usize {
        while let Some(c) = self.char_at(pos).filter(|&c| is_py_space(c)) {
            pos += c.len_utf8();
        }
        pos
    }
}

/// Appends text, joining it to a preceding text node.
fn push_text(nodes: &mut Vec<Node>, text: &str) {
    if let Some(Node::Text(last)) = nodes.last_mut() {
        last.push_str(text);
    } else {
        nodes.push(Node::Text(text.to_owned()));
    }
}

/// Byte length of lark's `SIGNED_NUMBER` at the start of `s`, matched as lark's regex does
/// (alternatives `INT _EXP`, `DECIMAL _EXP?`, `INT`, first match wins, each greedy).
fn signed_number_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let sign = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |from: usize| {
        b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let exponent = |from: usize| -> Option<usize> {
        if !matches!(b.get(from), Some(b'e' | b'E')) {
            return None;
        }
        let sign = usize::from(matches!(b.get(from + 1), Some(b'+' | b'-')));
        let n = digits(from + 1 + sign);
        (n > 0).then_some(1 + sign + n)
    };
    let int = digits(sign);
    // INT _EXP
    if int > 0 {
        if let Some(e) = exponent(sign + int) {
            return Some(sign + int + e);
        }
    }
    // DECIMAL _EXP?  (DECIMAL: INT "." INT? | "." INT)
    if b.get(sign + int) == Some(&b'.') {
        let frac = digits(sign + int + 1);
        if int > 0 || frac > 0 {
            let end = sign + int + 1 + frac;
            return Some(end + exponent(end).unwrap_or(0));
        }
    }
    // INT
    (int > 0).then_some(sign + int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_lark_signed_number() {
        for (s, len) in [
            ("3]", Some(1)),
            ("+3", Some(2)),
            ("-.5]", Some(3)),
            ("1.]", Some(2)),
            ("1e5", Some(3)),
            ("1.5E-2x", Some(6)),
            ("1e", Some(1)),
            (".", None),
            ("+", None),
            ("e5", None),
        ] {
            assert_eq!(signed_number_len(s), len, "{s}");
        }
    }

    #[test]
    fn nested_structures_parse() {
        let tree = parse("a[b:[c|d]:0.5]").unwrap();
        assert_eq!(tree.len(), 2);
        assert!(matches!(&tree[1], Node::Scheduled { when, .. } if when == "0.5"));
        assert!(parse("a | b").is_none());
        assert!(parse("a \\").is_none());
    }
}
