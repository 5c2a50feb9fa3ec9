"""Fixtures for crates/pigment/tests/prompt_conditioning.rs and crates/pigment-cli/tests/prompts.rs:
AUTOMATIC1111 prompt conditioning and textual inversion on the tiny models.

(a) Textual inversion, diffusers: a random 2-vector embedding for tiny-sd1 (width 32), saved in
    embeddings/ (an A1111-style embeddings folder) as
    - learned_embeds.safetensors  {"<tiny-cat>": [2, 32]}   (diffusers layout, token = trigger)
    - tinycat.safetensors         {"emb_params": [2, 32]}   (A1111 layout, file stem = trigger)
    - tinydog.pt                  torch.save of A1111's dict with `string_to_param` (a
                                  ParameterDict {"*": [2, 32]}), the layout A1111 trains
    and wide.safetensors          {"emb_params": [2, 48]}   (a width no tiny model has: errors)
    then diffusers' `load_textual_inversion` on tiny-sd1 and a StableDiffusionPipeline run with
    the trigger in the prompt: `ti.prompt_embeds` (encode_prompt) and `ti.latents` (Euler,
    4 steps, seed 0, guidance 7.5, 64x64, the latents before VAE decoding).

(b) A1111 conditioning: A PORT, NOT A1111 ITSELF. `A1111Port` below re-implements, on the tiny
    text encoders with transformers, the logic of AUTOMATIC1111 stable-diffusion-webui's
    modules/sd_hijack_clip.py (FrozenCLIPEmbedderWithCustomWordsBase / FrozenCLIPEmbedderWithCustomWords:
    tokenize_line, process_texts, forward, process_tokens, encode_with_transformers),
    modules/sd_hijack.py (EmbeddingsWithFixes), modules/sd_emphasis.py (EmphasisOriginal),
    modules/textual_inversion/textual_inversion.py (EmbeddingDatabase.register_embedding,
    find_embedding_at_position) and modules/prompt_parser.py (parse_prompt_attention, copied),
    with A1111's default options (emphasis "Original", comma_padding_backtrack 20). Where A1111
    tokenizes SD2 prompts with open_clip's tokenizer, the port uses the model folder's
    tokenizer (same BPE). Prompt-editing schedules are written out by hand (their parsing is
    tested against A1111's own parser in tests/prompt_syntax.rs); each schedule's texts are
    encoded as one batch, as A1111's get_learned_conditioning does, which matters for the mean
    that emphasis restores. Writes a1111_cases.json and a1111_conditioning.safetensors
    (`<id>.<i>`: [1, 77 * chunks, 32] for the i-th schedule entry; `empty.sd1`: the empty
    prompt, used to pad cond/uncond).

Run from the repo root after make_tiny_models.py: python tools/reference/make_prompt_fixtures.py
"""

import json
import os
import re

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "prompts")
CHUNK_LENGTH = 75
COMMA_PADDING_BACKTRACK = 20


# --- modules/prompt_parser.py: parse_prompt_attention (copied) ----------------------------------

re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    round_brackets = []
    square_brackets = []
    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        text = m.group(0)
        weight = m.group(1)
        if text.startswith('\\'):
            res.append([text[1:], 1.0])
        elif text == '(':
            round_brackets.append(len(res))
        elif text == '[':
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ')' and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif text == ']' and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            parts = re.split(re_break, text)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)
    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)
    if len(res) == 0:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


# --- the port of sd_hijack_clip.py and friends ------------------------------------------------

class Embedding:
    def __init__(self, vec, name):
        self.vec = vec
        self.name = name
        self.vectors = vec.shape[0]


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


class EmbeddingsWithFixes(torch.nn.Module):
    """sd_hijack.py: puts textual-inversion vectors over the placeholder tokens."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped
        self.fixes = None

    def forward(self, input_ids):
        batch_fixes = self.fixes
        self.fixes = None
        inputs_embeds = self.wrapped(input_ids)
        if batch_fixes is None or len(batch_fixes) == 0 or max([len(x) for x in batch_fixes]) == 0:
            return inputs_embeds
        vecs = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                vec = embedding.vec.to(tensor.dtype)
                emb_len = min(tensor.shape[0] - offset - 1, vec.shape[0])
                tensor = torch.cat([tensor[0:offset + 1], vec[0:emb_len], tensor[offset + 1 + emb_len:]])
            vecs.append(tensor)
        return torch.stack(vecs)


class A1111Port:
    """FrozenCLIPEmbedderWithCustomWords on a transformers CLIPTextModel (see the module doc)."""

    def __init__(self, model, embeddings=(), clip_skip=1):
        folder = os.path.join(MODELS, model)
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), model_max_length=77)
        self.transformer = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32).eval()
        emb = self.transformer.embeddings
        emb.token_embedding = EmbeddingsWithFixes(emb.token_embedding)
        self.fix_layer = emb.token_embedding
        self.clip_skip = clip_skip
        vocab = self.tokenizer.get_vocab()
        self.comma_token = vocab.get(',</w>', None)
        self.id_start = self.tokenizer.bos_token_id
        self.id_end = self.tokenizer.eos_token_id
        # SD1 pads with the end token; SD2 (FrozenOpenCLIPEmbedderWithCustomWords) with id 0.
        self.id_pad = self.tokenizer.pad_token_id
        # EmbeddingDatabase.register_embedding / find_embedding_at_position
        self.ids_lookup = {}
        for embedding in embeddings:
            ids = self.tokenize([embedding.name])[0]
            first_id = ids[0]
            self.ids_lookup.setdefault(first_id, [])
            self.ids_lookup[first_id] = sorted(self.ids_lookup[first_id] + [(ids, embedding)], key=lambda x: len(x[0]), reverse=True)

    def find_embedding_at_position(self, tokens, offset):
        token = tokens[offset]
        possible_matches = self.ids_lookup.get(token, None)
        if possible_matches is None:
            return None, None
        for ids, embedding in possible_matches:
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1)
        chunk.multipliers = [1.0] * (CHUNK_LENGTH + 2)
        return chunk

    def tokenize_line(self, line):
        parsed = parse_prompt_attention(line)
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks = []
        chunk = PromptChunk()
        last_comma = -1

        def next_chunk():
            nonlocal last_comma, chunk
            to_add = CHUNK_LENGTH - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end]
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
            last_comma = -1
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == 'BREAK' and weight == -1:
                next_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif COMMA_PADDING_BACKTRACK != 0 and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1 and len(chunk.tokens) - last_comma <= COMMA_PADDING_BACKTRACK:
                    break_location = last_comma + 1
                    reloc_tokens = chunk.tokens[break_location:]
                    reloc_mults = chunk.multipliers[break_location:]
                    chunk.tokens = chunk.tokens[:break_location]
                    chunk.multipliers = chunk.multipliers[:break_location]
                    next_chunk()
                    chunk.tokens = reloc_tokens
                    chunk.multipliers = reloc_mults
                if len(chunk.tokens) == CHUNK_LENGTH:
                    next_chunk()
                embedding, embedding_length_in_tokens = self.find_embedding_at_position(tokens, position)
                if embedding is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    position += 1
                    continue
                emb_len = int(embedding.vectors)
                if len(chunk.tokens) + emb_len > CHUNK_LENGTH:
                    next_chunk()
                chunk.fixes.append((len(chunk.tokens), embedding))
                chunk.tokens += [0] * emb_len
                chunk.multipliers += [weight] * emb_len
                position += embedding_length_in_tokens

        if chunk.tokens or not chunks:
            next_chunk()
        return chunks

    def forward(self, texts):
        cache = {}
        batch_chunks = []
        for line in texts:
            if line not in cache:
                cache[line] = self.tokenize_line(line)
            batch_chunks.append(cache[line])
        chunk_count = max([len(x) for x in batch_chunks])
        zs = []
        for i in range(chunk_count):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            tokens = [x.tokens for x in batch_chunk]
            multipliers = [x.multipliers for x in batch_chunk]
            self.fix_layer.fixes = [x.fixes for x in batch_chunk]
            zs.append(self.process_tokens(tokens, multipliers))
        return torch.hstack(zs)

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        tokens = torch.asarray(remade_batch_tokens)
        if self.id_end != self.id_pad:
            for batch_pos in range(len(remade_batch_tokens)):
                index = remade_batch_tokens[batch_pos].index(self.id_end)
                tokens[batch_pos, index + 1:tokens.shape[1]] = self.id_pad
        z = self.encode_with_transformers(tokens)
        # sd_emphasis.EmphasisOriginal.after_transformers
        multipliers = torch.asarray(batch_multipliers)
        original_mean = z.mean()
        z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
        new_mean = z.mean()
        z = z * (original_mean / new_mean)
        return z

    @torch.no_grad()
    def encode_with_transformers(self, tokens):
        outputs = self.transformer(input_ids=tokens, output_hidden_states=True)
        if self.clip_skip > 1:
            z = outputs.hidden_states[-self.clip_skip]
            z = self.transformer.final_layer_norm(z)  # transformers 5: no `text_model` level
        else:
            z = outputs.last_hidden_state
        return z


# --- cases --------------------------------------------------------------------------------------

LONG = ", ".join(
    ["a red star above a small green square", "a (blue:1.2) circle", "three yellow triangles",
     "a purple hexagon on the left", "[soft] shadows", "a white background"] * 3
)

# id, model, prompt, steps, clip skip, embeddings, hand-written schedule [(last step, text)]
CASES = [
    ("emphasis", "tiny-sd1", "a (red:1.3) star and a [blue] square", 4, 1, []),
    ("break", "tiny-sd1", "a red star BREAK a blue (square)", 4, 1, []),
    ("long", "tiny-sd1", LONG, 4, 1, []),
    ("nested", "tiny-sd1", "((a red star)) and (a (blue:1.5) square:0.8), [[tiny]]", 4, 1, []),
    ("clip_skip2", "tiny-sd1", "a (red:1.3) star and a [blue] square", 4, 2, []),
    ("editing", "tiny-sd1", "a [(cat:1.2):dog:2] on a hill", 4, 1, [],
     [(2, "a (cat:1.2) on a hill"), (4, "a dog on a hill")]),
    ("alternation", "tiny-sd1", "a [(cat:1.3)|dog] on a hill", 3, 1, [],
     [(1, "a (cat:1.3) on a hill"), (2, "a dog on a hill"), (3, "a (cat:1.3) on a hill")]),
    ("embedding", "tiny-sd1", "a photo of (tinycat:1.2) on a hill", 4, 1, ["tinycat"]),
    # 74 tokens, then an embedding of 2 vectors: it does not fit and starts the next chunk.
    ("embedding_overflow", "tiny-sd1", "a " * 74 + "(tinycat:1.1) star", 4, 1, ["tinycat"]),
    ("sd2_break", "tiny-sd2", "a (red:1.3) star BREAK and a [blue] square", 4, 1, []),
    ("sd2_long", "tiny-sd2", LONG, 4, 1, []),
]


def main():
    emb_dir = os.path.join(OUT, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    te = CLIPTextModel.from_pretrained(os.path.join(MODELS, "tiny-sd1", "text_encoder"))
    scale = float(te.embeddings.token_embedding.weight.float().std())
    vectors = torch.randn(2, 32, generator=gen) * scale * 3.0

    # (a) the embedding files
    save_file({"<tiny-cat>": vectors.contiguous()}, os.path.join(emb_dir, "learned_embeds.safetensors"))
    save_file({"emb_params": vectors.contiguous()}, os.path.join(emb_dir, "tinycat.safetensors"))
    param = torch.nn.Parameter(vectors.clone())
    torch.save({
        "string_to_token": {"*": 265},
        "string_to_param": torch.nn.ParameterDict({"*": param}),
        "name": "tinydog",
        "step": 0,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }, os.path.join(emb_dir, "tinydog.pt"))
    save_file({"emb_params": torch.randn(2, 48, generator=gen).contiguous()}, os.path.join(OUT, "wide.safetensors"))

    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(MODELS, "tiny-sd1"), torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.load_textual_inversion(os.path.join(emb_dir, "learned_embeds.safetensors"))
    ti_prompt = "a photo of <tiny-cat> on a hill"
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(ti_prompt, "cpu", 1, False)
        latents = pipe(ti_prompt, num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                       generator=torch.Generator().manual_seed(0), output_type="latent").images
    tensors = {
        "ti.prompt_embeds": embeds.contiguous(),
        "ti.latents": latents.contiguous(),
        "ti.vectors": vectors.contiguous(),
    }

    # (b) A1111 conditioning through the port
    cases = []
    ports = {}
    for case in CASES:
        cid, model, prompt, steps, clip_skip, emb_names = case[:6]
        schedule = case[6] if len(case) > 6 else [(steps, prompt)]
        embs = [Embedding(vectors, n) for n in emb_names]
        key = (model, clip_skip, tuple(emb_names))
        if key not in ports:
            ports[key] = A1111Port(model, embs, clip_skip)
        port = ports[key]
        conds = port.forward([text for _, text in schedule])
        for i in range(len(schedule)):
            tensors[f"{cid}.{i}"] = conds[i:i + 1].contiguous()
        cases.append({"id": cid, "model": model, "prompt": prompt, "steps": steps,
                      "clip_skip": clip_skip, "embeddings": emb_names,
                      "schedule": [[end, text] for end, text in schedule]})
        print(cid, tuple(conds.shape), float(conds.abs().mean()))
    tensors["empty.sd1"] = ports[("tiny-sd1", 1, ())].forward([""]).contiguous()

    save_file(tensors, os.path.join(OUT, "a1111_conditioning.safetensors"))
    with open(os.path.join(OUT, "a1111_cases.json"), "w") as f:
        json.dump({"ti_prompt": ti_prompt, "ti_steps": 4, "ti_cfg": 7.5, "ti_seed": 0,
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
