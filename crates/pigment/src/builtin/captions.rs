//! Captions that state exactly what a scene shows, from varied templates. Every caption is in
//! the grammar that `query::parse_caption` reads, so the analyser can check it.

use super::generate::{Category, RELATION_SEPARATION};
use super::prng::SplitMix64;
use super::world::{Background, Colour, Object, Relation, Scene, Shape, Size};

/// The least on-axis separation (fraction of the image) for a caption to state a relation.
pub const CAPTION_RELATION_MARGIN: f32 = 0.2;
// Relation scenes are generated with a wider separation than captions require.
const _: () = assert!(RELATION_SEPARATION >= CAPTION_RELATION_MARGIN);

/// A caption for `scene` with a category inferred from it (see `caption_for`).
pub fn caption(scene: &Scene, template_rng: &mut SplitMix64) -> String {
    let category = match scene.objects.len() {
        0 => Category::Background,
        1 => [Category::Single, Category::Sized, Category::Background][template_rng.below(3)],
        _ if same_kind(&scene.objects) => Category::Count,
        2 if clear_relation(&scene.objects[0], &scene.objects[1]).is_some() => Category::Relation,
        _ => Category::Composition,
    };
    caption_for(scene, category, template_rng)
}

/// A caption for `scene` in the form of `category` ("a red star", "a large green ring to the
/// left of a small yellow triangle", "three small yellow stars on a black background"...). Where
/// the scene cannot be described in that form (e.g. Count for different objects) the objects
/// are listed instead; the caption is true either way.
pub fn caption_for(scene: &Scene, category: Category, rng: &mut SplitMix64) -> String {
    let objects = &scene.objects;
    let (size_chance, background_chance) = match category {
        Category::Single => (0.0, 0.3),
        Category::Sized => (1.0, 0.3),
        Category::Background => (0.4, 1.0),
        Category::Relation | Category::Composition => (0.3, 0.3),
        Category::Count => (0.4, 0.3),
    };
    let sized = rng.chance(size_chance);
    let body = if objects.is_empty() {
        String::new()
    } else if objects.len() >= 2 && category == Category::Count && same_kind(objects) {
        let uniform = objects.iter().all(|o| o.size == objects[0].size);
        let words = object_words(&objects[0], sized && uniform, true);
        format!("{} {words}", number_word(objects.len()))
    } else if let (Category::Relation, [first, second]) = (category, objects.as_slice()) {
        let Some(relation) = clear_relation(first, second) else {
            return caption_for(scene, Category::Composition, rng);
        };
        let (a, b, relation) = if rng.chance(0.5) {
            (&objects[0], &objects[1], relation)
        } else {
            (&objects[1], &objects[0], relation.inverse())
        };
        let a = with_article(&object_words(a, sized, false));
        let b = with_article(&object_words(b, sized, false));
        format!("{a} {} {b}", relation.phrase())
    } else {
        let phrases: Vec<String> = objects
            .iter()
            .map(|o| with_article(&object_words(o, sized, false)))
            .collect();
        join_list(&phrases)
    };
    if body.is_empty() {
        return with_article(&format!(
            "{} background",
            background_words(&scene.background)
        ));
    }
    let mut text = match rng.below(8) {
        0 => format!("a picture of {body}"),
        1 => format!("an image of {body}"),
        2 => format!("a drawing of {body}"),
        _ => body,
    };
    if rng.chance(background_chance) {
        let colours = background_words(&scene.background);
        let phrase = match rng.below(3) {
            0 => format!(" on {} background", with_article(&colours)),
            1 => format!(" against {} background", with_article(&colours)),
            _ => format!(", {colours} background"),
        };
        text.push_str(&phrase);
    }
    text
}

/// The relation of `a` to `b` that is clearly true: the axis with the larger separation, when
/// that separation is at least `CAPTION_RELATION_MARGIN` and twice the other axis's.
pub fn clear_relation(a: &Object, b: &Object) -> Option<Relation> {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let (along, across, relation) = if dx.abs() >= dy.abs() {
        let r = if dx > 0.0 {
            Relation::LeftOf
        } else {
            Relation::RightOf
        };
        (dx.abs(), dy.abs(), r)
    } else {
        let r = if dy > 0.0 {
            Relation::Above
        } else {
            Relation::Below
        };
        (dy.abs(), dx.abs(), r)
    };
    (along >= CAPTION_RELATION_MARGIN && along >= 2.0 * across).then_some(relation)
}

fn same_kind(objects: &[Object]) -> bool {
    objects
        .iter()
        .all(|o| o.colour == objects[0].colour && o.shape == objects[0].shape)
}

/// "large green ring" / "green rings".
fn object_words(o: &Object, sized: bool, plural: bool) -> String {
    let shape = if plural {
        o.shape.plural()
    } else {
        o.shape.name()
    };
    if sized {
        format!("{} {} {shape}", o.size.name(), o.colour.name())
    } else {
        format!("{} {shape}", o.colour.name())
    }
}

fn background_words(background: &Background) -> String {
    match *background {
        Background::Plain(c) => c.name().to_string(),
        Background::TwoTone { first, second, .. } => {
            format!("{} and {}", first.name(), second.name())
        }
    }
}

/// Every word a caption can contain, for building a tokenizer of the built-in model.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words = vec![
        "a",
        "an",
        "and",
        "of",
        "picture",
        "image",
        "drawing",
        "to",
        "the",
        "left",
        "right",
        "above",
        "below",
        "on",
        "against",
        "background",
        "two",
        "three",
    ];
    words.extend(Colour::ALL.map(Colour::name));
    words.extend(Shape::ALL.map(Shape::name));
    words.extend(Shape::ALL.map(Shape::plural));
    words.extend(Size::ALL.map(Size::name));
    words
}

pub fn number_word(n: usize) -> &'static str {
    ["zero", "one", "two", "three", "four", "five", "six"]
        .get(n)
        .copied()
        .unwrap_or("many")
}

fn with_article(words: &str) -> String {
    let vowel = words.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {words}", if vowel { "an" } else { "a" })
}

/// "x", "x and y", "x, y and z".
fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::world::Halves;

    fn obj(shape: Shape, colour: Colour, size: Size, x: f32, y: f32) -> Object {
        Object {
            shape,
            colour,
            size,
            x,
            y,
            diameter: size.diameter(),
        }
    }

    #[test]
    fn templates_read_naturally() {
        let mut rng = SplitMix64::new(1);
        let scene = Scene {
            objects: vec![obj(Shape::Ring, Colour::Orange, Size::Large, 0.5, 0.5)],
            background: Background::TwoTone {
                first: Colour::Black,
                second: Colour::White,
                halves: Halves::LeftRight,
            },
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(caption_for(&scene, Category::Background, &mut rng));
        }
        assert!(
            seen.contains("an orange ring on a black and white background"),
            "{seen:?}"
        );
        assert!(seen.contains("a large orange ring, black and white background"));
        assert!(seen.contains("a picture of an orange ring against a black and white background"));
    }

    #[test]
    fn relation_and_count_forms() {
        let mut rng = SplitMix64::new(2);
        let pair = Scene {
            objects: vec![
                obj(Shape::Circle, Colour::Blue, Size::Small, 0.2, 0.5),
                obj(Shape::Square, Colour::Red, Size::Small, 0.7, 0.55),
            ],
            background: Background::Plain(Colour::White),
        };
        let text = caption_for(&pair, Category::Relation, &mut rng);
        assert!(
            text.ends_with("blue circle to the left of a red square")
                || text.ends_with("red square to the right of a blue circle"),
            "{text}"
        );
        let mut three = pair.clone();
        three.objects = vec![obj(Shape::Star, Colour::Yellow, Size::Small, 0.2, 0.2); 3];
        let text = caption(&three, &mut rng);
        assert!(
            text.contains("three") && text.contains("yellow stars"),
            "{text}"
        );
    }
}
