//! The judge: does an image show what a query asks? The analyser perceives the image (see
//! `detect`), matches the query's objects to the detections by exhaustive search (best total of
//! matching attributes, then satisfied relations), and reports each asked attribute.

use ::image::RgbImage;

use super::detect::{perceive, Detection, Perception};
use super::query::{BackgroundQuery, ObjectQuery, Query, MAX_OBJECTS};
use super::world::Background;

/// The least centre separation (fraction of the image) for a relation to count as true.
pub const RELATION_MARGIN: f32 = 0.08;

/// Per asked attribute, whether the image gets it right (None: the query did not ask).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Every asked colour is on a matched object.
    pub colour: Option<bool>,
    pub shape: Option<bool>,
    pub size: Option<bool>,
    /// The image shows exactly as many objects as asked (always checked).
    pub count: Option<bool>,
    pub relation: Option<bool>,
    pub background: Option<bool>,
    /// What the analyser saw, for reports and debugging.
    pub seen: Perception,
}

impl Verdict {
    pub fn all_correct(&self) -> bool {
        [
            self.colour,
            self.shape,
            self.size,
            self.count,
            self.relation,
            self.background,
        ]
        .iter()
        .all(|v| *v != Some(false))
    }

    /// Names of the attributes judged wrong.
    pub fn failures(&self) -> Vec<&'static str> {
        let named = [
            ("colour", self.colour),
            ("shape", self.shape),
            ("size", self.size),
            ("count", self.count),
            ("relation", self.relation),
            ("background", self.background),
        ];
        named
            .into_iter()
            .filter(|(_, v)| *v == Some(false))
            .map(|(n, _)| n)
            .collect()
    }
}

/// Judge `img` against `query`. Never panics, whatever the image.
pub fn analyse(img: &RgbImage, query: &Query) -> Verdict {
    judge(perceive(img), query)
}

/// Judge an existing perception against `query`.
pub fn judge(seen: Perception, query: &Query) -> Verdict {
    // One slot per asked object: (group index, group).
    let slots: Vec<(usize, &ObjectQuery)> = query
        .objects
        .iter()
        .enumerate()
        .flat_map(|(g, o)| std::iter::repeat_n((g, o), o.count))
        .take(MAX_OBJECTS)
        .collect();
    let candidates = &seen.objects[..seen.objects.len().min(slots.len() + 2)];
    let assignment = best_assignment(&slots, candidates, query);
    let assigned = |k: usize| assignment[k].map(|d| &candidates[d]);
    let check = |asks: &dyn Fn(&ObjectQuery) -> bool,
                 ok: &dyn Fn(&ObjectQuery, &Detection) -> bool| {
        let asked: Vec<usize> = (0..slots.len()).filter(|&k| asks(slots[k].1)).collect();
        (!asked.is_empty()).then(|| {
            asked
                .iter()
                .all(|&k| assigned(k).is_some_and(|d| ok(slots[k].1, d)))
        })
    };
    let colour = check(&|q| q.colour.is_some(), &|q, d| q.colour == Some(d.colour));
    let shape = check(&|_| true, &|q, d| q.shape == d.shape);
    let size = check(&|q| q.size.is_some(), &|q, d| q.size == Some(d.size));
    let relation = query.relation.map(|_| {
        let asked = relation_pairs(&slots, query);
        asked > 0 && relations_satisfied(&slots, &assignment, candidates, query) == asked
    });
    let background = query
        .background
        .map(|asked| match (asked, seen.background) {
            (BackgroundQuery::Plain(c), Some(Background::Plain(s))) => c == s,
            (BackgroundQuery::TwoTone(a, b), Some(Background::TwoTone { first, second, .. })) => {
                (a, b) == (first, second) || (a, b) == (second, first)
            }
            _ => false,
        });
    Verdict {
        colour,
        shape,
        size,
        count: Some(seen.objects.len() == query.total_objects()),
        relation,
        background,
        seen,
    }
}

/// For each slot, the index of its detection (or None), maximising matched attributes first
/// and satisfied relation pairs second. Exhaustive: at most 6 slots and 8 candidates.
fn best_assignment(
    slots: &[(usize, &ObjectQuery)],
    candidates: &[Detection],
    query: &Query,
) -> Vec<Option<usize>> {
    let mut best = (f32::NEG_INFINITY, vec![None; slots.len()]);
    let mut current = vec![None; slots.len()];
    let mut used = vec![false; candidates.len()];
    search(
        0,
        slots,
        candidates,
        query,
        &mut current,
        &mut used,
        &mut best,
    );
    best.1
}

fn search(
    k: usize,
    slots: &[(usize, &ObjectQuery)],
    candidates: &[Detection],
    query: &Query,
    current: &mut Vec<Option<usize>>,
    used: &mut Vec<bool>,
    best: &mut (f32, Vec<Option<usize>>),
) {
    if k == slots.len() {
        let attributes: f32 = (0..slots.len())
            .filter_map(|s| current[s].map(|d| matches(slots[s].1, &candidates[d])))
            .sum();
        let relations = relations_satisfied(slots, current, candidates, query) as f32;
        let score = attributes + 0.5 * relations;
        if score > best.0 {
            *best = (score, current.clone());
        }
        return;
    }
    for d in 0..candidates.len() {
        if !used[d] {
            used[d] = true;
            current[k] = Some(d);
            search(k + 1, slots, candidates, query, current, used, best);
            used[d] = false;
        }
    }
    // Leave the slot empty only when there are fewer detections than slots.
    if candidates.len() < slots.len() {
        current[k] = None;
        search(k + 1, slots, candidates, query, current, used, best);
    }
}

/// Matched asked attributes (plus a small reward for being matched at all).
fn matches(q: &ObjectQuery, d: &Detection) -> f32 {
    let mut score = 0.1 + f32::from(u8::from(q.shape == d.shape));
    score += f32::from(u8::from(q.colour == Some(d.colour)));
    score += f32::from(u8::from(q.size == Some(d.size)));
    score
}

/// Number of (subject member, object member) pairs the relation asks about.
fn relation_pairs(slots: &[(usize, &ObjectQuery)], query: &Query) -> usize {
    let Some(r) = query.relation else { return 0 };
    let members = |g: usize| slots.iter().filter(|s| s.0 == g).count();
    members(r.subject) * members(r.object)
}

fn relations_satisfied(
    slots: &[(usize, &ObjectQuery)],
    assignment: &[Option<usize>],
    candidates: &[Detection],
    query: &Query,
) -> usize {
    let Some(r) = query.relation else { return 0 };
    let positions = |g: usize| -> Vec<(f32, f32)> {
        (0..slots.len())
            .filter(|&k| slots[k].0 == g)
            .filter_map(|k| assignment[k].map(|d| (candidates[d].x, candidates[d].y)))
            .collect()
    };
    let (subjects, objects) = (positions(r.subject), positions(r.object));
    subjects
        .iter()
        .map(|&a| {
            objects
                .iter()
                .filter(|&&b| r.relation.holds(a, b, RELATION_MARGIN))
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::detect::ShapeFeatures;
    use crate::builtin::query::parse_caption;
    use crate::builtin::world::{Colour, Shape, Size};

    fn seen(objects: &[(Colour, Shape, f32, f32)]) -> Perception {
        let objects = objects
            .iter()
            .map(|&(colour, shape, x, y)| Detection {
                colour,
                shape,
                size: Size::Small,
                x,
                y,
                diameter: 0.2,
                area: 0.02,
                features: ShapeFeatures {
                    template: [0.0; 6],
                    symmetry: 1.0,
                },
            })
            .collect();
        Perception {
            background: Some(Background::Plain(Colour::White)),
            objects,
        }
    }

    #[test]
    fn judges_each_attribute_separately() {
        let q = parse_caption("a red star to the left of a small blue circle").unwrap();
        let right = seen(&[
            (Colour::Red, Shape::Star, 0.2, 0.5),
            (Colour::Blue, Shape::Circle, 0.7, 0.5),
        ]);
        let v = judge(right.clone(), &q);
        assert!(v.all_correct(), "{v:?}");
        assert_eq!((v.size, v.background), (Some(true), None));

        let mut swapped = right.clone();
        swapped.objects[0].x = 0.9;
        assert_eq!(judge(swapped, &q).failures(), vec!["relation"]);

        let mut missing = right.clone();
        missing.objects.pop();
        let v = judge(missing, &q);
        assert_eq!(v.count, Some(false));
        assert_eq!(v.relation, Some(false));

        let mut extra = right;
        extra.objects.push(extra.objects[0].clone());
        assert_eq!(judge(extra, &q).failures(), vec!["count"]);
    }

    #[test]
    fn counts_and_backgrounds() {
        let q = parse_caption("two green rings on a white background").unwrap();
        let two = seen(&[
            (Colour::Green, Shape::Ring, 0.2, 0.2),
            (Colour::Green, Shape::Ring, 0.7, 0.7),
        ]);
        assert!(judge(two.clone(), &q).all_correct());
        let mut recoloured = two.clone();
        recoloured.objects[1].colour = Colour::Red;
        assert_eq!(judge(recoloured, &q).failures(), vec!["colour"]);
        let mut black = two;
        black.background = Some(Background::Plain(Colour::Black));
        assert_eq!(judge(black, &q).failures(), vec!["background"]);
    }
}
