"""Reference fixtures for Pigment's CLIP tokenizer and CLIP text encoder.

Writes tests/fixtures/text/:
- tokenizer.json: prompts and the ids transformers' CLIPTokenizer gives them, for
  (a) the OpenAI BPE file written as vocab.json + merges.txt (what `ClipTokenizer::embedded` and
      `from_files` must reproduce): plain `encode` ids and diffusers-style padded ids;
  (b) the tokenizer folders of the tiny models (`from_folder`): SD1 pads with <|endoftext|>,
      SD2 pads with "!" (id 0, which transformers also treats as a special token in the text).
- text_encoder_sd1.safetensors / text_encoder_sd2.safetensors: for a few prompts, the padded
  input ids, `last_hidden_state`, and `final_layer_norm(hidden_states[-2])` /
  `final_layer_norm(hidden_states[-3])` (A1111 clip skip 2 / 3, diffusers clip_skip 1 / 2),
  from transformers' CLIPTextModel on tests/fixtures/models/tiny-sd{1,2}/text_encoder in f32.

Needs tools/reference/make_tiny_models.py to have been run. Run from the repo root:
    python tools/reference/make_text_fixtures.py
"""

import gzip
import json
import os
import tempfile

import open_clip
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

OUT = os.path.join("tests", "fixtures", "text")
MODELS = os.path.join("tests", "fixtures", "models")
MAX_LEN = 77

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "   ",
    "A Photograph Of An ASTRONAUT Riding A Horse",
    "(masterpiece:1.2), [cat|dog], {blue}, ((best quality)), <lora:foo_bar:0.8> BREAK sky",
    "portrait of a woman, highly detailed, 8k, trending on artstation, by greg rutkowski and alphonse mucha",
    "wow!! great! what?!?! ... -- __ ## @@ $$ %% ^^ && ** ~~ `` ||",
    "it's don't we'll I'M they'RE you've he'd ''s it’s rock'n'roll",
    "1024x768 3.14159 1,000,000 2nd 21st 0.5 -42 +7 1e-5",
    "multiple   spaces\nnew line\r\nwindows\ttab\t\ttabs \u00a0nbsp\u3000ideographic\u2028line-sep",
    "odd controls a\x1cb\x1fc\x85d\x0be\u200bf\u200dg\ufeffh",
    "html &amp; entities &lt;3 &#39;quoted&#39; &quot;x&quot; &nbsp;",
    "café naïve résumé Ångström Zürich façade",
    "decomposed cafe\u0301 e\u0308 A\u030a",
    "ΟΔΟΣ Σ ΣΊΣΥΦΟΣ İstanbul straße ﬁne ǅemal",
    "日本の風景、富士山と桜 中文提示词 한국어 프롬프트",
    "emoji 👩‍🚀🚀🇫🇷 ❤️ 👍🏽 🐱‍👤 ✨✨",
    "mathematics x² ½ ∞ ≠ ≤ Ⅻ ① ٣ ४",
    "العربية हिन्दी ไทย עברית русский",
    "ＡＢＣ fullwidth １２３ ｈｅｌｌｏ",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "https://example.com/path?q=1&x=y user@mail.com #hashtag @mention",
    "a<|endoftext|>b <|ENDOFTEXT|> <|startoftext|>c <|endoftext|><|endoftext|>",
    "'s 't 're 've 'm 'll 'd '' 'S",
    "snake_case camelCase kebab-case dot.separated slash/separated",
    "\"quoted\" 'single' «guillemets» „low“ ‘curly’",
    "tab\tseparated\tvalues\nand\nlines\n\n\nblank",
    " ".join(["a long prompt with many words"] * 20),
    "x " * 100,
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
]

# Prompts whose hidden states are compared (kept short: three per model).
ENCODER_PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "(masterpiece:1.2), a red cat!!",
    "",
]


def write_clip_vocab(folder):
    """vocab.json + merges.txt from OpenAI's BPE file shipped in open_clip (REFERENCE-NOTES.md)."""
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_unicode = [chr(c) for c in cs]
    vocab = byte_unicode + [v + "</w>" for v in byte_unicode] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")


def encode_all(tok):
    cases = []
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=False).input_ids
        padded = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        cases.append({"prompt": prompt, "ids": ids, "padded": padded})
    return cases


def tokenizer_fixture():
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_vocab(tmp)
        tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), model_max_length=MAX_LEN)
        embedded = encode_all(tok)
    astronaut = embedded[0]["padded"][:10]
    assert astronaut == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407], astronaut
    folders = {}
    for name in ["tiny-sd1", "tiny-sd2"]:
        tok = CLIPTokenizer.from_pretrained(os.path.join(MODELS, name, "tokenizer"))
        folders[name] = {"pad_id": tok.pad_token_id, "model_max_length": tok.model_max_length, "cases": encode_all(tok)}
    assert folders["tiny-sd2"]["pad_id"] == 0 and folders["tiny-sd1"]["pad_id"] == 49407
    fixture = {
        "source": "transformers.CLIPTokenizer (tools/reference/make_text_fixtures.py)",
        "max_len": MAX_LEN,
        "embedded": embedded,
        "folders": folders,
    }
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)


def encoder_fixture(name):
    tok = CLIPTokenizer.from_pretrained(os.path.join(MODELS, name, "tokenizer"))
    model = CLIPTextModel.from_pretrained(os.path.join(MODELS, name, "text_encoder"), dtype=torch.float32).eval()
    ids = tok(ENCODER_PROMPTS, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        # transformers 4 nests the transformer under `.text_model`; transformers 5 does not.
        final_norm = getattr(model, "text_model", model).final_layer_norm
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        assert torch.allclose(final_norm(out.hidden_states[-1]), out.last_hidden_state, atol=1e-6)
        tensors = {
            "input_ids": ids.to(torch.int64).contiguous(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
            # diffusers encode_prompt: final_layer_norm(hidden_states[-(clip_skip + 1)]).
            "clip_skip_2": final_norm(out.hidden_states[-2]).contiguous(),
            "clip_skip_3": final_norm(out.hidden_states[-3]).contiguous(),
        }
    save_file(tensors, os.path.join(OUT, f"text_encoder_{name.split('-')[1]}.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    tokenizer_fixture()
    encoder_fixture("tiny-sd1")
    encoder_fixture("tiny-sd2")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
