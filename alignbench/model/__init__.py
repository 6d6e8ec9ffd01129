"""The model: vision tower, connector and LLM composed (`vlm`), what a run saves of it (`checkpoint`), and LoRA
adapters on the LLM (`lora`)."""
