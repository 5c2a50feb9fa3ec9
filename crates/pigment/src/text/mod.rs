//! CLIP text side: the BPE tokenizer and the text encoder whose hidden states condition the UNet.

mod bpe;
mod byte_level;
pub mod clip_text;
pub mod config;
mod pretokenize;
pub mod prompt_syntax;
pub mod tokenizer;
mod vocab_files;

pub use clip_text::ClipTextModel;
pub use config::ClipTextConfig;
pub use tokenizer::ClipTokenizer;
