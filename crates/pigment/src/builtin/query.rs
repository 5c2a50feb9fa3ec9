//! What a caption (or a user prompt in the same grammar) says should be seen, and its parser.
//!
//! Grammar (case and punctuation are ignored; "," lists like "and"):
//! ```text
//! caption    := [lead-in] objects [background] | "a" colours "background"
//! lead-in    := ("a" | "an") ("picture" | "image" | "drawing" | "photo") "of"
//! objects    := group relation group | group ("and" group)*
//! group      := determiner [size] [colour] shape      (size and colour in either order)
//! determiner := "a" | "an" | "one" | "two" | ... | "six"
//! relation   := ["to" "the"] ("left" | "right") "of" | "above" | "below" | "over" | "under"
//! background := ("on" | "against" | "in front of" | "and") ["a" | "an"] colours "background"
//! colours    := colour | colour "and" colour
//! ```

use super::world::{Colour, Relation, Shape, Size};

/// The most objects a query may ask for (the analyser's matching is exhaustive).
pub const MAX_OBJECTS: usize = 6;

/// `count` objects, each of the given shape and (where stated) colour and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectQuery {
    pub count: usize,
    pub colour: Option<Colour>,
    pub shape: Shape,
    pub size: Option<Size>,
}

/// Every object of group `subject` stands in `relation` to every object of group `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationQuery {
    pub subject: usize,
    pub relation: Relation,
    pub object: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundQuery {
    Plain(Colour),
    /// Two tones, in either arrangement.
    TwoTone(Colour, Colour),
}

/// What should be seen. The image must show exactly the listed objects, no more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub objects: Vec<ObjectQuery>,
    pub relation: Option<RelationQuery>,
    pub background: Option<BackgroundQuery>,
}

impl Query {
    pub fn total_objects(&self) -> usize {
        self.objects.iter().map(|o| o.count).sum()
    }
}

/// Parse a caption into a query; None when the text is outside the grammar.
pub fn parse_caption(text: &str) -> Option<Query> {
    let cleaned: String = text
        .to_lowercase()
        .replace(',', " and ")
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    if let [det, noun, "of", ..] = words[..] {
        let lead_in = ["picture", "image", "drawing", "photo"].contains(&noun);
        if is_article(det) && lead_in {
            words.drain(..3);
        }
    }
    let background = take_background(&mut words)?;
    if words.is_empty() {
        return background.map(|b| Query {
            objects: vec![],
            relation: None,
            background: Some(b),
        });
    }
    let (objects, relation) = parse_objects(&words)?;
    let total: usize = objects.iter().map(|o| o.count).sum();
    (total <= MAX_OBJECTS).then_some(Query {
        objects,
        relation,
        background,
    })
}

fn is_article(word: &str) -> bool {
    word == "a" || word == "an"
}

/// Remove a trailing background phrase from `words`. Outer None: malformed; inner None: absent.
fn take_background(words: &mut Vec<&str>) -> Option<Option<BackgroundQuery>> {
    if words.last() != Some(&"background") {
        return if words.contains(&"background") {
            None
        } else {
            Some(None)
        };
    }
    words.pop();
    let second = Colour::from_word(words.pop()?)?;
    let two_tone_first = match words[..] {
        [.., first, "and"] => Colour::from_word(first),
        _ => None,
    };
    let query = match two_tone_first {
        Some(first) => {
            words.truncate(words.len() - 2);
            BackgroundQuery::TwoTone(first, second)
        }
        None => BackgroundQuery::Plain(second),
    };
    if words.last().is_some_and(|w| is_article(w)) {
        words.pop();
    }
    if words.is_empty() {
        return Some(Some(query));
    }
    match words.as_slice() {
        [.., "in", "front", "of"] => words.truncate(words.len() - 3),
        [.., "on" | "against" | "and" | "with"] => {
            words.pop();
        }
        _ => return None,
    }
    Some(Some(query))
}

/// Objects part: either two groups around a relation, or groups joined by "and".
fn parse_objects(words: &[&str]) -> Option<(Vec<ObjectQuery>, Option<RelationQuery>)> {
    if let Some((start, len, relation)) = relation_phrase(words) {
        let subject = parse_group(&words[..start])?;
        let object = parse_group(&words[start + len..])?;
        let relation = RelationQuery {
            subject: 0,
            relation,
            object: 1,
        };
        return Some((vec![subject, object], Some(relation)));
    }
    let groups = words
        .split(|w| *w == "and")
        .map(parse_group)
        .collect::<Option<Vec<_>>>()?;
    Some((groups, None))
}

/// The first relation phrase in `words`: (start, length, relation).
fn relation_phrase(words: &[&str]) -> Option<(usize, usize, Relation)> {
    for i in 0..words.len() {
        let rest = &words[i..];
        let found = match rest {
            ["to", "the", "left", "of", ..] => Some((4, Relation::LeftOf)),
            ["to", "the", "right", "of", ..] => Some((4, Relation::RightOf)),
            ["left", "of", ..] => Some((2, Relation::LeftOf)),
            ["right", "of", ..] => Some((2, Relation::RightOf)),
            ["above" | "over", ..] => Some((1, Relation::Above)),
            ["below" | "under" | "beneath", ..] => Some((1, Relation::Below)),
            _ => None,
        };
        if let Some((len, relation)) = found {
            return Some((i, len, relation));
        }
    }
    None
}

/// determiner [size] [colour] shape, size and colour in either order.
fn parse_group(words: &[&str]) -> Option<ObjectQuery> {
    let (&det, rest) = words.split_first()?;
    let (&shape_word, attributes) = rest.split_last()?;
    let count = match det {
        "a" | "an" | "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        _ => return None,
    };
    let shape = Shape::from_word(shape_word)?;
    let (mut colour, mut size) = (None, None);
    for &word in attributes {
        match (Colour::from_word(word), Size::from_word(word)) {
            (Some(c), _) if colour.is_none() => colour = Some(c),
            (_, Some(s)) if size.is_none() => size = Some(s),
            _ => return None,
        }
    }
    Some(ObjectQuery {
        count,
        colour,
        shape,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(count: usize, colour: Colour, shape: Shape, size: Option<Size>) -> ObjectQuery {
        ObjectQuery {
            count,
            colour: Some(colour),
            shape,
            size,
        }
    }

    #[test]
    fn parses_the_template_forms() {
        let q = parse_caption("a red star").unwrap();
        assert_eq!(q.objects, vec![group(1, Colour::Red, Shape::Star, None)]);
        assert_eq!(q.background, None);

        let q =
            parse_caption("A large green ring to the left of a small yellow triangle.").unwrap();
        assert_eq!(
            q.objects[0],
            group(1, Colour::Green, Shape::Ring, Some(Size::Large))
        );
        assert_eq!(
            q.objects[1],
            group(1, Colour::Yellow, Shape::Triangle, Some(Size::Small))
        );
        assert_eq!(q.relation.unwrap().relation, Relation::LeftOf);

        let q = parse_caption("two blue circles on a white background").unwrap();
        assert_eq!(q.objects, vec![group(2, Colour::Blue, Shape::Circle, None)]);
        assert_eq!(q.background, Some(BackgroundQuery::Plain(Colour::White)));

        let q =
            parse_caption("a picture of a purple cross on a black and white background").unwrap();
        assert_eq!(
            q.objects,
            vec![group(1, Colour::Purple, Shape::Cross, None)]
        );
        let two_tone = BackgroundQuery::TwoTone(Colour::Black, Colour::White);
        assert_eq!(q.background, Some(two_tone));

        let q =
            parse_caption("a red circle, a blue square and a gray star, black background").unwrap();
        assert_eq!(q.total_objects(), 3);
        assert_eq!(q.background, Some(BackgroundQuery::Plain(Colour::Black)));

        let q = parse_caption("an orange background").unwrap();
        assert_eq!(q.total_objects(), 0);
        assert_eq!(
            parse_caption("a blue circle below a red square")
                .unwrap()
                .relation
                .unwrap()
                .relation,
            Relation::Below
        );
    }

    #[test]
    fn rejects_text_outside_the_grammar() {
        for text in [
            "",
            "a red",
            "a red dog",
            "red star",
            "a red red star",
            "a star on a background",
            "a star background on",
            "six red stars and a blue circle",
            "a red star to the left of",
        ] {
            assert_eq!(parse_caption(text), None, "{text}");
        }
    }
}
