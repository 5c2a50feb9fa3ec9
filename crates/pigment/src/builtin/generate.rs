//! Random scenes, one recipe per caption category. Every choice comes from the caller's PRNG,
//! so a scene is a pure function of the generator's seed.

use super::prng::SplitMix64;
use super::world::{
    is_held_out, Background, Colour, Halves, Object, Relation, Scene, Shape, Size, HELD_OUT,
    MIN_CONTRAST,
};

/// What a sample is meant to exercise; also the evaluation categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// One object, caption names colour and shape.
    Single,
    /// One object, caption names size, colour and shape.
    Sized,
    /// Two objects in a clear spatial relation.
    Relation,
    /// Two or three identical objects ("three small yellow stars").
    Count,
    /// One object, caption names the (plain or two-tone) background.
    Background,
    /// Two or three different objects listed without a relation.
    Composition,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Single,
        Category::Sized,
        Category::Relation,
        Category::Count,
        Category::Background,
        Category::Composition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Single => "single",
            Category::Sized => "sized",
            Category::Relation => "relation",
            Category::Count => "count",
            Category::Background => "background",
            Category::Composition => "composition",
        }
    }

    /// Share of the training mix (out of 100).
    pub fn weight(self) -> u32 {
        match self {
            Category::Single => 20,
            Category::Sized => 15,
            Category::Relation => 25,
            Category::Count => 15,
            Category::Background => 10,
            Category::Composition => 15,
        }
    }
}

/// Which (colour, shape) pairs a split may draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Never contains a held-out pair, in any object.
    Train,
    /// The scene's first object is always a held-out pair; the others are unrestricted.
    Eval,
}

/// Empty space kept between object boxes and between a box and the image edge.
const GAP: f32 = 0.06;
const EDGE: f32 = 0.04;
/// Separation along the relation's axis, and the most allowed across it, for relation scenes.
pub const RELATION_SEPARATION: f32 = 0.25;
const RELATION_CROSS_AXIS: f32 = 0.10;
const PLACEMENT_TRIES: usize = 400;

pub fn generate(category: Category, split: Split, rng: &mut SplitMix64) -> Scene {
    let mut pairs = Pairs {
        split,
        used: vec![],
    };
    let (objects, two_tone_chance) = match category {
        Category::Single | Category::Sized => {
            let size = random_size(rng);
            (vec![pairs.object(rng, size)], 0.2)
        }
        Category::Background => {
            let size = random_size(rng);
            (vec![pairs.object(rng, size)], 0.5)
        }
        Category::Relation => (relation_pair(&mut pairs, rng), 0.2),
        Category::Count => (counted(&mut pairs, rng), 0.2),
        Category::Composition => {
            let n = 2 + rng.below(2);
            let sizes: Vec<Size> = (0..n).map(|_| random_size(rng)).collect();
            let mut objects: Vec<Object> = sizes.iter().map(|&s| pairs.object(rng, s)).collect();
            place_anywhere(&mut objects, rng);
            (objects, 0.2)
        }
    };
    let background = background_for(&objects, two_tone_chance, rng);
    Scene {
        objects,
        background,
    }
}

/// Draws distinct (colour, shape) pairs allowed by the split.
struct Pairs {
    split: Split,
    used: Vec<(Colour, Shape)>,
}

impl Pairs {
    fn pair(&mut self, rng: &mut SplitMix64) -> (Colour, Shape) {
        let first = self.used.is_empty();
        let pair = loop {
            let pair = if first && self.split == Split::Eval {
                HELD_OUT[rng.below(HELD_OUT.len())]
            } else {
                (Colour::ALL[rng.below(12)], Shape::ALL[rng.below(6)])
            };
            let allowed = self.split == Split::Eval || !is_held_out(pair.0, pair.1);
            if allowed && !self.used.contains(&pair) {
                break pair;
            }
        };
        self.used.push(pair);
        pair
    }

    fn object(&mut self, rng: &mut SplitMix64, size: Size) -> Object {
        let (colour, shape) = self.pair(rng);
        let mut object = new_object(shape, colour, size, rng);
        let (x, y) = random_position(object.diameter, rng);
        object.x = x;
        object.y = y;
        object
    }
}

fn random_size(rng: &mut SplitMix64) -> Size {
    Size::ALL[rng.below(2)]
}

fn new_object(shape: Shape, colour: Colour, size: Size, rng: &mut SplitMix64) -> Object {
    Object {
        shape,
        colour,
        size,
        x: 0.5,
        y: 0.5,
        diameter: size.diameter() * rng.range_f32(0.94, 1.06),
    }
}

fn random_position(diameter: f32, rng: &mut SplitMix64) -> (f32, f32) {
    let lo = EDGE + diameter / 2.0;
    let hi = (1.0 - lo).max(lo);
    (rng.range_f32(lo, hi), rng.range_f32(lo, hi))
}

/// Whether two objects' boxes are at least GAP apart along some axis.
fn apart(a: &Object, b: &Object) -> bool {
    boxes_apart(a, b, GAP)
}

/// Whether two objects' boxes are at least `gap` apart along some axis (0: do not overlap).
pub(super) fn boxes_apart(a: &Object, b: &Object, gap: f32) -> bool {
    let need = (a.diameter + b.diameter) / 2.0 + gap;
    (a.x - b.x).abs() >= need || (a.y - b.y).abs() >= need
}

/// Place objects at random non-overlapping positions satisfying `ok`; when that fails many
/// times, shrink every object to small (small ones always fit) and try again.
fn place(objects: &mut [Object], rng: &mut SplitMix64, ok: impl Fn(&[Object]) -> bool) {
    for attempt in 0..2 * PLACEMENT_TRIES {
        if attempt == PLACEMENT_TRIES {
            for o in objects.iter_mut() {
                o.size = Size::Small;
                o.diameter = Size::Small.diameter();
            }
        }
        for o in objects.iter_mut() {
            (o.x, o.y) = random_position(o.diameter, rng);
        }
        let separated = (0..objects.len())
            .all(|i| (i + 1..objects.len()).all(|j| apart(&objects[i], &objects[j])));
        if separated && ok(objects) {
            return;
        }
    }
}

fn place_anywhere(objects: &mut [Object], rng: &mut SplitMix64) {
    place(objects, rng, |_| true);
}

/// Two different objects, the first in a randomly chosen clear relation to the second.
fn relation_pair(pairs: &mut Pairs, rng: &mut SplitMix64) -> Vec<Object> {
    let relation = Relation::ALL[rng.below(4)];
    let sizes = [random_size(rng), random_size(rng)];
    let mut objects = vec![pairs.object(rng, sizes[0]), pairs.object(rng, sizes[1])];
    place(&mut objects, rng, |o| {
        let (a, b) = ((o[0].x, o[0].y), (o[1].x, o[1].y));
        let cross = match relation {
            Relation::LeftOf | Relation::RightOf => (a.1 - b.1).abs(),
            Relation::Above | Relation::Below => (a.0 - b.0).abs(),
        };
        relation.holds(a, b, RELATION_SEPARATION) && cross <= RELATION_CROSS_AXIS
    });
    objects
}

/// Two or three objects of one (colour, shape); sizes all equal or mixed.
fn counted(pairs: &mut Pairs, rng: &mut SplitMix64) -> Vec<Object> {
    let n = 2 + rng.below(2);
    let (colour, shape) = pairs.pair(rng);
    let same_size = rng.chance(0.6);
    let first_size = random_size(rng);
    let mut objects: Vec<Object> = (0..n)
        .map(|_| {
            let size = if same_size {
                first_size
            } else {
                random_size(rng)
            };
            new_object(shape, colour, size, rng)
        })
        .collect();
    place_anywhere(&mut objects, rng);
    objects
}

/// A plain or two-tone background that contrasts with every object.
fn background_for(objects: &[Object], two_tone_chance: f32, rng: &mut SplitMix64) -> Background {
    let candidates: Vec<Colour> = Colour::ALL
        .into_iter()
        .filter(|&c| objects.iter().all(|o| c.distance(o.colour) >= MIN_CONTRAST))
        .collect();
    let Some(&first) = rng.pick(&candidates) else {
        // Cannot happen with the palette's spacing and at most three colours; stay total anyway.
        return Background::Plain(Colour::Black);
    };
    if rng.chance(two_tone_chance) {
        let seconds: Vec<Colour> = candidates
            .iter()
            .copied()
            .filter(|&c| c.distance(first) >= MIN_CONTRAST)
            .collect();
        if let Some(&second) = rng.pick(&seconds) {
            let halves = if rng.chance(0.5) {
                Halves::LeftRight
            } else {
                Halves::TopBottom
            };
            return Background::TwoTone {
                first,
                second,
                halves,
            };
        }
    }
    Background::Plain(first)
}
