"""Models: loading by reference (`loading`), the tiny built-ins (`tiny`), SmolLM2 from GGUF (`gguf`),
LoRA (`lora`), the original model (`reference`), weight snapshots (`weights`), hidden states
(`hidden`) and the model card (`fingerprint`)."""
