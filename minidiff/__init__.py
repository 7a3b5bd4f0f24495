"""minidiff: a small text-to-image diffusion model, its customization, and what customization does
to the rest of the model (Laria et al., "Assessing Open-world Forgetting in Generative Image Model
Customization", arXiv 2410.14159). One idea per file, in reading order:

    tokenizer.py         word-level tokenizer over the caption grammar, placeholder tokens
                         <new0>..<new9>
    attention.py         multi-head self-/cross-attention (to_q, to_k, to_v, to_out)
    clip.py              tiny CLIP: text transformer + CNN image encoder, symmetric InfoNCE,
                         zero-shot
    unet.py              the noise predictor: FiLM residual blocks, spatial transformers, skip
                         connections
    diffusion.py         schedules, forward process, eps loss, DDPM and DDIM sampling,
                         classifier-free guidance
    text2img.py          UNet + frozen text encoder: conditioning, generation from fixed seeds
    customize.py         what each customization method trains (full, prior, LoRA, Custom Diffusion,
                         TI)
    lora.py              low-rank adapters, merge / unmerge
    regularizers.py      prior preservation and functional regularization against the frozen base
                         model
    classifier.py        the diffusion model as a zero-shot classifier (adaptive timestep stages)
    open_world.py        the drift protocol: semantic and appearance drift of a customized model
    quality.py           how good samples are, judged by the evaluator network

The stages, each `python train.py <stage>`: train_clip.py (clip), train_diffusion.py (diffusion),
train_customize.py (customize); the drift measurement is `python evaluate.py drift`.
"""
