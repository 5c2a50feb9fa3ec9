//! Hard negatives for the contrastive CLIP stage: a scene with exactly one fact changed (one
//! object's shape, one object's size, the scene mirrored so that its relation flips, or one
//! object dropped from a count or a list), captioned with the same template choices.
//!
//! Why: in random batches of this world the colours alone (objects and background) tell almost
//! every caption from every other, so a contrastive text tower learns colour and little else.
//! The fourth CLIP put "a red star" and "a red circle" 14 apart (L2 over its 77 hidden states)
//! against 81 for "a red star" / "a blue star", and the UNet conditioned on it drew "a green
//! star" and "a green cross" as the same blob. A batch holding a scene and its counterfactual
//! can only be matched by the word that differs (the hard-negative idea of Robinson et al. 2021,
//! with negatives made rather than mined).

use super::captions::{caption_for, clear_relation};
use super::generate::{boxes_apart, Category, Split};
use super::prng::SplitMix64;
use super::world::{is_held_out, Relation, Scene, Shape, Size};

/// What a counterfactual changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Shape,
    Size,
    Mirror,
    Drop,
}

const CHANGES: [Change; 4] = [Change::Shape, Change::Size, Change::Mirror, Change::Drop];
/// Random changes tried before falling back to a shape change (which always exists).
const TRIES: usize = 8;

/// `scene` with one fact changed and its caption, made with `caption_rng` (a copy of the
/// generator's state just before the original caption was drawn, so that template, article and
/// word-order choices repeat and the captions differ only where the scene does). The result
/// stays in `split` (no held-out pair enters the training split) and its caption differs from
/// `original_caption`.
pub fn counterfactual(
    scene: &Scene,
    category: Category,
    split: Split,
    original_caption: &str,
    caption_rng: &SplitMix64,
    rng: &mut SplitMix64,
) -> (Scene, String, Change) {
    for attempt in 0..=TRIES {
        let change = if attempt == TRIES {
            Change::Shape
        } else {
            CHANGES[rng.below(CHANGES.len())]
        };
        let Some(changed) = apply(scene, category, split, change, rng) else {
            continue;
        };
        let caption = caption_for(&changed, category, &mut caption_rng.clone());
        if caption != original_caption {
            return (changed, caption, change);
        }
    }
    // Every object has another allowed shape (at most 1 of 6 is held out per colour) and every
    // caption names its objects' shapes, so the loop above has returned; stay total anyway.
    (scene.clone(), original_caption.to_string(), Change::Shape)
}

fn apply(
    scene: &Scene,
    category: Category,
    split: Split,
    change: Change,
    rng: &mut SplitMix64,
) -> Option<Scene> {
    let mut out = scene.clone();
    let objects = &mut out.objects;
    if objects.is_empty() {
        return None;
    }
    match change {
        Change::Shape => {
            // Every object of the chosen kind changes, so a count scene stays "n of a kind".
            let target = &objects[rng.below(objects.len())];
            let (colour, old) = (target.colour, target.shape);
            let choices: Vec<Shape> = Shape::ALL
                .into_iter()
                .filter(|&s| s != old && (split == Split::Eval || !is_held_out(colour, s)))
                .filter(|&s| {
                    !scene
                        .objects
                        .iter()
                        .any(|o| o.colour == colour && o.shape == s)
                })
                .collect();
            let shape = *rng.pick(&choices)?;
            for o in objects.iter_mut() {
                if o.colour == colour && o.shape == old {
                    o.shape = shape;
                }
            }
        }
        Change::Size => {
            let i = rng.below(objects.len());
            let o = &mut objects[i];
            let to = match o.size {
                Size::Small => Size::Large,
                Size::Large => Size::Small,
            };
            o.diameter *= to.diameter() / o.size.diameter();
            o.size = to;
            let o = &objects[i];
            let half = o.diameter / 2.0;
            let inside = [o.x, o.y]
                .iter()
                .all(|&c| c - half >= 0.0 && c + half <= 1.0);
            let clear = objects
                .iter()
                .enumerate()
                .all(|(j, other)| j == i || boxes_apart(o, other, 0.0));
            if !inside || !clear {
                return None;
            }
        }
        Change::Mirror => {
            // Only a relation caption says where things are; flip along its axis.
            if category != Category::Relation || objects.len() != 2 {
                return None;
            }
            let horizontal = matches!(
                clear_relation(&objects[0], &objects[1])?,
                Relation::LeftOf | Relation::RightOf
            );
            for o in objects.iter_mut() {
                if horizontal {
                    o.x = 1.0 - o.x;
                } else {
                    o.y = 1.0 - o.y;
                }
            }
        }
        Change::Drop => {
            // Two objects stay, so the category's caption form stays.
            if objects.len() < 3 {
                return None;
            }
            objects.remove(rng.below(objects.len()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::dataset::Dataset;

    #[test]
    fn every_counterfactual_changes_one_fact_and_its_caption() {
        let data = Dataset::train(11);
        let mut seen = std::collections::HashSet::new();
        for index in 0..600 {
            let (original, negative, change) = data.contrast_pair(index);
            assert_ne!(original.caption, negative.caption, "item {index}");
            assert_ne!(original.image, negative.image, "item {index}");
            for o in &negative.scene.objects {
                assert!(
                    !is_held_out(o.colour, o.shape),
                    "item {index}: held-out pair"
                );
            }
            let (a, b) = (&original.scene.objects, &negative.scene.objects);
            seen.insert(format!("{change:?}"));
            match change {
                Change::Drop => assert_eq!(b.len() + 1, a.len()),
                Change::Shape => {
                    assert_eq!(a.len(), b.len());
                    assert!(a.iter().zip(b).any(|(x, y)| x.shape != y.shape));
                    assert!(a
                        .iter()
                        .zip(b)
                        .all(|(x, y)| x.colour == y.colour && x.x == y.x));
                }
                Change::Size => {
                    let changed = a.iter().zip(b).filter(|(x, y)| x.size != y.size).count();
                    assert_eq!(changed, 1, "item {index}");
                }
                Change::Mirror => {
                    let r0 = clear_relation(&a[0], &a[1]);
                    let r1 = clear_relation(&b[0], &b[1]);
                    assert_eq!(r0.map(|r| r.inverse()), r1, "item {index}");
                }
            }
            assert_eq!(original.scene.background, negative.scene.background);
        }
        assert_eq!(seen.len(), 4, "every kind of change occurs: {seen:?}");
    }

    #[test]
    fn counterfactual_captions_differ_only_in_the_changed_words() {
        let data = Dataset::train(3);
        for index in 0..200 {
            let (original, negative, change) = data.contrast_pair(index);
            let a: Vec<&str> = original.caption.split(' ').collect();
            let b: Vec<&str> = negative.caption.split(' ').collect();
            if change == Change::Shape && a.len() == b.len() {
                let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
                assert_eq!(differing, 1, "{a:?} / {b:?}");
            }
        }
    }
}
