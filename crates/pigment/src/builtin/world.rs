//! The vocabulary of the synthetic world: shapes, colours, sizes, relations, and the scene that
//! the renderer draws and the captioner describes.

/// The shapes the world knows. Every shape fits a `d x d` box (d = the object's diameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Ring,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Ring,
        Shape::Cross,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Star => "stars",
            Shape::Ring => "rings",
            Shape::Cross => "crosses",
        }
    }

    /// The shape named by a word, singular or plural.
    pub fn from_word(word: &str) -> Option<Shape> {
        Shape::ALL
            .into_iter()
            .find(|s| s.name() == word || s.plural() == word)
    }
}

/// The palette. RGB values are chosen so that any two colours are at least ~105 apart
/// (Euclidean, 0..255 per channel); see `palette_is_well_separated` below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    White,
    Black,
    Pink,
    Cyan,
    Brown,
    Gray,
}

impl Colour {
    pub const ALL: [Colour; 12] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::White,
        Colour::Black,
        Colour::Pink,
        Colour::Cyan,
        Colour::Brown,
        Colour::Gray,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::White => "white",
            Colour::Black => "black",
            Colour::Pink => "pink",
            Colour::Cyan => "cyan",
            Colour::Brown => "brown",
            Colour::Gray => "gray",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 25, 35],
            Colour::Green => [35, 165, 55],
            Colour::Blue => [35, 75, 225],
            Colour::Yellow => [250, 230, 35],
            Colour::Purple => [140, 40, 190],
            Colour::Orange => [250, 125, 20],
            Colour::White => [245, 245, 245],
            Colour::Black => [15, 15, 15],
            Colour::Pink => [250, 140, 200],
            Colour::Cyan => [40, 210, 225],
            Colour::Brown => [110, 60, 20],
            Colour::Gray => [130, 130, 130],
        }
    }

    /// The colour named by a word ("grey" is accepted for gray).
    pub fn from_word(word: &str) -> Option<Colour> {
        if word == "grey" {
            return Some(Colour::Gray);
        }
        Colour::ALL.into_iter().find(|c| c.name() == word)
    }

    /// Euclidean RGB distance between two palette colours.
    pub fn distance(self, other: Colour) -> f32 {
        rgb_distance(self.rgb().map(f32::from), other.rgb().map(f32::from))
    }

    /// The palette colour nearest to an RGB value.
    pub fn nearest(rgb: [f32; 3]) -> Colour {
        let mut best = (f32::INFINITY, Colour::Gray);
        for c in Colour::ALL {
            let d = rgb_distance(rgb, c.rgb().map(f32::from));
            if d < best.0 {
                best = (d, c);
            }
        }
        best.1
    }
}

pub fn rgb_distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A background must be at least this far (RGB distance) from every object's colour, and the
/// two tones of a two-tone background this far from each other, so that objects stand out.
pub const MIN_CONTRAST: f32 = 120.0;

/// Two sizes, defined by the object's diameter as a fraction of the image side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    pub fn from_word(word: &str) -> Option<Size> {
        match word {
            "small" | "little" | "tiny" => Some(Size::Small),
            "large" | "big" => Some(Size::Large),
            _ => None,
        }
    }

    /// Nominal diameter as a fraction of the image side (the renderer jitters it by +-6%).
    pub fn diameter(self) -> f32 {
        match self {
            Size::Small => 0.22,
            Size::Large => 0.36,
        }
    }

    /// The boundary the analyser uses: the geometric mean of the two diameters.
    pub fn threshold() -> f32 {
        (Size::Small.diameter() * Size::Large.diameter()).sqrt()
    }
}

/// Spatial relations between two objects (of their centres).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    pub const ALL: [Relation; 4] = [
        Relation::LeftOf,
        Relation::RightOf,
        Relation::Above,
        Relation::Below,
    ];

    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// The same fact stated from the other object's side.
    pub fn inverse(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Whether `a` stands in this relation to `b`, with centres in image-normalised
    /// coordinates (x right, y down) and a required separation `margin` along the axis.
    pub fn holds(self, a: (f32, f32), b: (f32, f32), margin: f32) -> bool {
        match self {
            Relation::LeftOf => b.0 - a.0 >= margin,
            Relation::RightOf => a.0 - b.0 >= margin,
            Relation::Above => b.1 - a.1 >= margin,
            Relation::Below => a.1 - b.1 >= margin,
        }
    }
}

/// One drawn object. Position and diameter are fractions of the image side, so a scene renders
/// the same at any resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    /// Centre of the object's `d x d` box, x to the right, y down, in [0, 1].
    pub x: f32,
    pub y: f32,
    /// Diameter (side of the box the shape fills) as a fraction of the image side.
    pub diameter: f32,
}

/// Which halves of the image a two-tone background paints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Halves {
    /// `first` on the left half, `second` on the right half.
    LeftRight,
    /// `first` on the top half, `second` on the bottom half.
    TopBottom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    Plain(Colour),
    TwoTone {
        first: Colour,
        second: Colour,
        halves: Halves,
    },
}

impl Background {
    pub fn colours(&self) -> Vec<Colour> {
        match *self {
            Background::Plain(c) => vec![c],
            Background::TwoTone { first, second, .. } => vec![first, second],
        }
    }

    /// The background colour at normalised position (x, y).
    pub fn colour_at(&self, x: f32, y: f32) -> Colour {
        match *self {
            Background::Plain(c) => c,
            Background::TwoTone {
                first,
                second,
                halves,
            } => {
                let t = if halves == Halves::LeftRight { x } else { y };
                if t < 0.5 {
                    first
                } else {
                    second
                }
            }
        }
    }

    /// Whether an object of colour `c` stands out clearly against this background.
    pub fn contrasts_with(&self, c: Colour) -> bool {
        self.colours()
            .into_iter()
            .all(|b| b.distance(c) >= MIN_CONTRAST)
    }
}

/// What an image shows: objects drawn in order over a background.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub background: Background,
}

/// The (colour, shape) pairs that the training split never contains and the eval split is
/// built on: about 10% of the 72 pairs, every shape at least once, to measure compositional
/// generalisation (does "green star" work when only green things and other stars were seen?).
pub const HELD_OUT: [(Colour, Shape); 7] = [
    (Colour::Green, Shape::Star),
    (Colour::Orange, Shape::Ring),
    (Colour::Purple, Shape::Triangle),
    (Colour::Blue, Shape::Cross),
    (Colour::Yellow, Shape::Square),
    (Colour::Pink, Shape::Circle),
    (Colour::Cyan, Shape::Triangle),
];

pub fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_well_separated() {
        for a in Colour::ALL {
            for b in Colour::ALL {
                if a != b {
                    assert!(a.distance(b) > 100.0, "{a:?} vs {b:?}");
                }
            }
            assert_eq!(Colour::nearest(a.rgb().map(f32::from)), a);
            // Every colour has plenty of possible backgrounds.
            let backgrounds = Colour::ALL
                .into_iter()
                .filter(|&b| b.distance(a) >= MIN_CONTRAST)
                .count();
            assert!(backgrounds >= 8, "{a:?}");
        }
    }

    #[test]
    fn words_round_trip() {
        for s in Shape::ALL {
            assert_eq!(Shape::from_word(s.name()), Some(s));
            assert_eq!(Shape::from_word(s.plural()), Some(s));
        }
        for c in Colour::ALL {
            assert_eq!(Colour::from_word(c.name()), Some(c));
        }
    }

    #[test]
    fn held_out_is_about_ten_percent_and_covers_every_shape() {
        let pairs = Colour::ALL.len() * Shape::ALL.len();
        assert!(HELD_OUT.len() * 100 / pairs >= 9);
        for s in Shape::ALL {
            assert!(HELD_OUT.iter().any(|&(_, hs)| hs == s), "{s:?}");
        }
    }
}
