//! Attention (emphasis) syntax: `(word)`, `(word:1.3)`, `[word]`, escapes and `BREAK`, parsed
//! with the exact rules of AUTOMATIC1111's `modules/prompt_parser.py::parse_prompt_attention`.
//!
//! A1111 scans the prompt with one regular expression whose alternatives are tried in order
//! (`\(`, `\)`, `\[`, `\]`, `\\`, a lone `\`, `(`, `[`, `:<number>)`, `)`, `]`, a run of other
//! text, `:`); `next_token` is that scanner written out by hand so that its character classes are
//! Python's (`\s` includes U+001C..U+001F, which Rust's `char::is_whitespace` does not).
//! Weights are multiplied in f64, in the same order as Python does, so that the merging of equal
//! neighbours (an exact float comparison in A1111) gives the same fragments.

/// Something in the prompt A1111 accepts silently but that probably is not what the author
/// meant (an unclosed or stray bracket, an unreadable weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// 1-based column of the offending character, counted in characters (not bytes).
    pub column: usize,
    pub message: String,
}

/// `(` multiplies attention by 1.1, `[` divides by it (A1111 `round_bracket_multiplier`).
const ROUND_BRACKET_MULTIPLIER: f64 = 1.1;

/// The weight A1111 gives a `BREAK` marker fragment.
pub const BREAK_WEIGHT: f32 = -1.0;

/// The text A1111 gives a `BREAK` marker fragment.
pub const BREAK_TEXT: &str = "BREAK";

/// One match of A1111's `re_attention`.
enum Token<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\` (the escaped character) or a lone `\` (empty).
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:<spaces><number><spaces>)`, with the columns of the number and of the `)`.
    Weight {
        number: &'a str,
        number_column: usize,
        close_column: usize,
    },
    CloseRound,
    CloseSquare,
    /// A run of characters other than `\()[]:`, or a lone `:`.
    Text(&'a str),
}

/// Python's `str.isspace()` (what `\s` matches in a `str` pattern).
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` in a `str` pattern (alphanumeric or underscore), as closely as std allows.
fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The `:\s*([+-]?[.\d]+)\s*\)` alternative at the start of `rest` (which begins with `:`):
/// returns the byte range of the number and the byte length of the whole match.
fn match_weight(rest: &str) -> Option<(std::ops::Range<usize>, usize)> {
    let bytes = rest.as_bytes();
    let mut i = 1; // past ':'
    let skip_spaces = |mut i: usize| {
        while let Some(c) = rest[i..].chars().next() {
            if !is_py_space(c) {
                break;
            }
            i += c.len_utf8();
        }
        i
    };
    i = skip_spaces(i);
    let number_start = i;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        i += 1;
    }
    let digits_start = i;
    while i < bytes.len() && (bytes[i] == b'.' || bytes[i].is_ascii_digit()) {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let number_end = i;
    i = skip_spaces(i);
    if i < bytes.len() && bytes[i] == b')' {
        Some((number_start..number_end, i + 1))
    } else {
        None
    }
}

/// The next `re_attention` match at byte `pos` of `text`, and its byte length.
fn next_token(text: &str, pos: usize, column: usize) -> (Token<'_>, usize) {
    let rest = &text[pos..];
    let mut chars = rest.chars();
    let first = chars.next().unwrap_or(' ');
    match first {
        '\\' => match chars.next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                (Token::Escaped(&rest[1..2]), 1 + c.len_utf8())
            }
            _ => (Token::Escaped(""), 1),
        },
        '(' => (Token::OpenRound, 1),
        '[' => (Token::OpenSquare, 1),
        ':' => match match_weight(rest) {
            Some((number, len)) => {
                let token = Token::Weight {
                    number_column: column + rest[..number.start].chars().count(),
                    number: &rest[number],
                    close_column: column + rest[..len].chars().count() - 1,
                };
                (token, len)
            }
            None => (Token::Text(&rest[..1]), 1),
        },
        ')' => (Token::CloseRound, 1),
        ']' => (Token::CloseSquare, 1),
        _ => {
            let len = rest
                .find(['\\', '(', ')', '[', ']', ':'])
                .unwrap_or(rest.len());
            (Token::Text(&rest[..len]), len)
        }
    }
}

/// `re.split(r"\s*\bBREAK\b\s*", run)`: the pieces of `run` between `BREAK` keywords.
fn split_on_break(run: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut piece_start = 0;
    let mut search = 0;
    while let Some(found) = run[search..].find(BREAK_TEXT) {
        let at = search + found;
        let end = at + BREAK_TEXT.len();
        let word_before = run[..at].chars().next_back().is_some_and(is_py_word);
        let word_after = run[end..].chars().next().is_some_and(is_py_word);
        if word_before || word_after {
            search = at + 1;
            continue;
        }
        // The match starts at the first of the spaces right before `BREAK`, but never before
        // the end of the previous match (matches do not overlap).
        let mut start = at;
        while let Some(c) = run[piece_start..start].chars().next_back() {
            if !is_py_space(c) {
                break;
            }
            start -= c.len_utf8();
        }
        let mut stop = end;
        while let Some(c) = run[stop..].chars().next() {
            if !is_py_space(c) {
                break;
            }
            stop += c.len_utf8();
        }
        pieces.push(&run[piece_start..start]);
        piece_start = stop;
        search = stop;
    }
    pieces.push(&run[piece_start..]);
    pieces
}

/// A1111's `parse_prompt_attention`: the prompt as (text, weight) fragments. See
/// [`parse_prompt_attention_with_warnings`] for the rules.
pub fn parse_prompt_attention(text: &str) -> Vec<(String, f32)> {
    parse_prompt_attention_with_warnings(text).0
}

/// A1111's `parse_prompt_attention`, plus warnings A1111 does not give.
///
/// `(x)` multiplies the weight of `x` by 1.1, `((x))` by 1.21, `[x]` divides by 1.1,
/// `(x:1.3)` multiplies by 1.3; `\(`, `\)`, `\[`, `\]`, `\\` are literal characters and a
/// `\` before anything else is dropped. An unclosed bracket applies its multiplier to the rest
/// of the prompt; a stray closing bracket is plain text. `BREAK` (a whole word) becomes the
/// fragment `("BREAK", -1.0)`. Neighbouring fragments with equal weights are merged, and an
/// empty prompt gives `[("", 1.0)]`.
///
/// Where A1111 would raise (a weight such as `1.2.3` that Python's `float` rejects), the
/// bracket closes with weight 1.0 and a warning says so.
pub fn parse_prompt_attention_with_warnings(text: &str) -> (Vec<(String, f32)>, Vec<ParseWarning>) {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut warnings = Vec::new();
    // (index into `res`, column of the bracket)
    let mut round_brackets: Vec<(usize, usize)> = Vec::new();
    let mut square_brackets: Vec<(usize, usize)> = Vec::new();
    let square_bracket_multiplier = 1.0 / ROUND_BRACKET_MULTIPLIER;

    fn multiply_range(res: &mut [(String, f64)], start: usize, multiplier: f64) {
        for fragment in res.iter_mut().skip(start) {
            fragment.1 *= multiplier;
        }
    }
    fn push_text(res: &mut Vec<(String, f64)>, run: &str) {
        for (i, part) in split_on_break(run).into_iter().enumerate() {
            if i > 0 {
                res.push((BREAK_TEXT.to_owned(), f64::from(BREAK_WEIGHT)));
            }
            res.push((part.to_owned(), 1.0));
        }
    }

    let mut pos = 0;
    let mut column = 1;
    while pos < text.len() {
        let (token, len) = next_token(text, pos, column);
        let matched = &text[pos..pos + len];
        match token {
            Token::Escaped(literal) => res.push((literal.to_owned(), 1.0)),
            Token::OpenRound => round_brackets.push((res.len(), column)),
            Token::OpenSquare => square_brackets.push((res.len(), column)),
            Token::Weight {
                number,
                number_column,
                ..
            } if !round_brackets.is_empty() => {
                let (start, _) = round_brackets.pop().unwrap_or_default();
                let weight = number.parse::<f64>().unwrap_or_else(|_| {
                    warnings.push(ParseWarning {
                        column: number_column,
                        message: format!(
                            "`{number}` is not a number; the weight of this bracket is ignored \
                             (write it like `1.2`)"
                        ),
                    });
                    1.0
                });
                multiply_range(&mut res, start, weight);
            }
            Token::Weight { close_column, .. } => {
                warnings.push(ParseWarning {
                    column: close_column,
                    message: "`)` closes no `(`; it is kept as text (write `\\)` for a literal \
                              bracket)"
                        .to_owned(),
                });
                push_text(&mut res, matched);
            }
            Token::CloseRound if !round_brackets.is_empty() => {
                let (start, _) = round_brackets.pop().unwrap_or_default();
                multiply_range(&mut res, start, ROUND_BRACKET_MULTIPLIER);
            }
            Token::CloseSquare if !square_brackets.is_empty() => {
                let (start, _) = square_brackets.pop().unwrap_or_default();
                multiply_range(&mut res, start, square_bracket_multiplier);
            }
            Token::CloseRound | Token::CloseSquare => {
                let (close, open) = if matched == ")" {
                    (")", "(")
                } else {
                    ("]", "[")
                };
                warnings.push(ParseWarning {
                    column,
                    message: format!(
                        "`{close}` closes no `{open}`; it is kept as text (write `\\{close}` for \
                         a literal bracket)"
                    ),
                });
                push_text(&mut res, matched);
            }
            Token::Text(run) => push_text(&mut res, run),
        }
        pos += len;
        column += matched.chars().count();
    }

    for &(_, open_column) in &round_brackets {
        warnings.push(unclosed_warning('(', ')', open_column));
    }
    for &(_, open_column) in &square_brackets {
        warnings.push(unclosed_warning('[', ']', open_column));
    }
    apply_unclosed(&mut res, &round_brackets, &square_brackets);
    warnings.sort_by_key(|w| w.column);

    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    let fragments = merged
        .into_iter()
        .map(|(text, weight)| {
            let weight = to_f32_keeping_break_marker(&text, weight);
            (text, weight)
        })
        .collect();
    (fragments, warnings)
}

/// A1111 multiplies the rest of the prompt by 1.1 for each unclosed `(` (in order), then by
/// 1/1.1 for each unclosed `[`. Entry `p` thus sees 1.1 applied once per unclosed `(` at or
/// before it, then 1/1.1 once per unclosed `[`: the same f64 operations, done entry by entry and
/// continued from the previous entry's partial product where it started from the same value, so
/// that thousands of unclosed brackets cost linear rather than quadratic time.
fn apply_unclosed(res: &mut [(String, f64)], round: &[(usize, usize)], square: &[(usize, usize)]) {
    let square_multiplier = 1.0 / ROUND_BRACKET_MULTIPLIER;
    let (mut round_seen, mut square_seen) = (0, 0);
    let (mut round_memo, mut square_memo) = (None, None);
    for (p, fragment) in res.iter_mut().enumerate() {
        while round.get(round_seen).is_some_and(|&(start, _)| start <= p) {
            round_seen += 1;
        }
        while square
            .get(square_seen)
            .is_some_and(|&(start, _)| start <= p)
        {
            square_seen += 1;
        }
        let after_round = repeated_product(
            &mut round_memo,
            fragment.1,
            round_seen,
            ROUND_BRACKET_MULTIPLIER,
        );
        fragment.1 = repeated_product(
            &mut square_memo,
            after_round,
            square_seen,
            square_multiplier,
        );
    }
}

/// `start * factor * factor * ...` (`times` roundings, left to right), reusing `memo` (the last
/// start, count and result) when the start is the same and the count has not decreased.
fn repeated_product(
    memo: &mut Option<(u64, usize, f64)>,
    start: f64,
    times: usize,
    factor: f64,
) -> f64 {
    let (mut done, mut value) = match *memo {
        Some((bits, n, value)) if bits == start.to_bits() && n <= times => (n, value),
        _ => (0, start),
    };
    while done < times {
        value *= factor;
        done += 1;
    }
    *memo = Some((start.to_bits(), times, value));
    value
}

/// Rounds a weight to f32. A1111 recognises the `BREAK` marker by comparing the f64 weight with
/// -1; a `BREAK` inside brackets can end at, e.g., -1.0000000000000002, which is not a marker
/// there but would round to exactly -1.0 here: such a weight gets the neighbouring f32 instead.
fn to_f32_keeping_break_marker(text: &str, weight: f64) -> f32 {
    let rounded = weight as f32;
    if text == BREAK_TEXT && rounded == BREAK_WEIGHT && weight != f64::from(BREAK_WEIGHT) {
        f32::from_bits(BREAK_WEIGHT.to_bits() + 1)
    } else {
        rounded
    }
}

fn unclosed_warning(open: char, close: char, column: usize) -> ParseWarning {
    ParseWarning {
        column,
        message: format!(
            "`{open}` is never closed, so its emphasis runs to the end of the prompt (add `{close}`, \
             or write `\\{open}` for a literal bracket)"
        ),
    }
}
