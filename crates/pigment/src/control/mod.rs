//! ControlNet preprocessors ("annotators") written natively: turn a picture into the control
//! image a ControlNet was trained on, with no OpenCV at run time.
//!
//! - [`canny`]: OpenCV's `cv2.Canny(img, low, high)` (aperture 3, L1 gradient) reproduced
//!   bit for bit, as ControlNet's canny annotator calls it (`annotator/canny/__init__.py`
//!   passes the RGB array straight in).
//! - [`scribble_from_edges`]: thick, smoothed strokes from an edge map, modelled on the
//!   post-process of ControlNet's `gradio_fake_scribble2image.py`.
//! - [`control_image_from_edges`]: the 3-channel image a ControlNet pipeline takes
//!   (ControlNet's `HWC3`).

mod blur;
mod canny;
pub mod controlnet;
mod hysteresis;
mod nms;
mod scribble;
mod sobel;

pub use canny::{canny, CannyInput};
pub use controlnet::{load_controlnet, ControlNetConfig, ControlNetModel, ControlNetOutput};
pub use scribble::{
    control_image_from_edges, scribble_from_edges, scribble_from_edges_with, SCRIBBLE_SIGMA,
    SCRIBBLE_THRESHOLD,
};
