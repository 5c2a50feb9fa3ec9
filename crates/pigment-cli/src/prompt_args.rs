//! The prompt flags shared by `generate` and `edit`: which prompt syntax, and textual-inversion
//! embeddings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use pigment::adapters::{load_textual_inversion, load_textual_inversion_dir, TextualInversion};
use pigment::pipelines::{prompt_warnings, PromptSyntax, StableDiffusion};

#[derive(Args, Clone, Debug)]
pub struct PromptArgs {
    /// How prompts are read. a1111: AUTOMATIC1111's syntax: (word:1.3) and [word] emphasis,
    /// BREAK, [from:to:when] prompt editing, [a|b] alternation, prompts longer than 75 tokens.
    /// plain: the text as written, cut at 77 tokens, exactly as diffusers. Both give the same
    /// image for a prompt without brackets of at most 75 tokens.
    #[arg(long, default_value = "a1111", value_name = "a1111|plain")]
    pub prompt_syntax: String,
    /// A textual-inversion embedding (.pt, .bin or .safetensors; AUTOMATIC1111 or diffusers
    /// layout). Use it by name in the prompt: the file name without extension for A1111 files,
    /// the token (e.g. <cat-toy>) for diffusers' learned_embeds files. Repeatable.
    #[arg(long = "embedding", value_name = "FILE")]
    pub embeddings: Vec<PathBuf>,
    /// Every embedding file (.pt, .bin, .safetensors) in DIR, each named as with --embedding
    /// (AUTOMATIC1111's embeddings folder).
    #[arg(long, value_name = "DIR")]
    pub embedding_dir: Option<PathBuf>,
}

impl PromptArgs {
    pub fn syntax(&self) -> Result<PromptSyntax> {
        Ok(self.prompt_syntax.parse()?)
    }

    /// Reads every embedding the flags name (before the model loads, so bad files fail fast).
    pub fn load_embeddings(&self) -> Result<Vec<TextualInversion>> {
        let mut all = Vec::new();
        if let Some(dir) = &self.embedding_dir {
            if !dir.is_dir() {
                anyhow::bail!(
                    "--embedding-dir {}: no such folder; pass a folder of .pt/.bin/.safetensors \
                     embeddings",
                    dir.display()
                );
            }
            all.extend(
                load_textual_inversion_dir(dir)
                    .with_context(|| format!("reading --embedding-dir {}", dir.display()))?,
            );
        }
        for file in &self.embeddings {
            all.extend(
                load_textual_inversion(file)
                    .with_context(|| format!("reading --embedding {}", file.display()))?,
            );
        }
        Ok(all)
    }

    /// Adds the embeddings to the model and says which trigger words they answer to.
    pub fn add_to(model: &mut StableDiffusion, embeddings: &[TextualInversion]) -> Result<()> {
        for embedding in embeddings {
            model.add_textual_inversion(embedding)?;
            eprintln!(
                "embedding `{}` ({} vector{}) from {}",
                embedding.name,
                embedding.vector_count(),
                if embedding.vector_count() == 1 {
                    ""
                } else {
                    "s"
                },
                embedding.path.display()
            );
        }
        Ok(())
    }
}

/// Prints what the syntax of `prompt` may not mean as written, to stderr, naming the column.
pub fn warn_about_prompt(what: &str, prompt: &str, syntax: PromptSyntax) {
    for warning in prompt_warnings(prompt, syntax) {
        eprintln!(
            "warning: {what}, column {}: {}",
            warning.column, warning.message
        );
    }
}
