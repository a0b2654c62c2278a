"""The training worker (`maestro train`): fine-tune a causal LM, evaluate it, hand back evidence.

contract.py   env names, output layout, exit codes, summary type (imported by the operator; stdlib only)
config.py     LLMTrainingJob spec → typed settings (validated by maestro.api)
models.py     base model URI → local dir; precision; LoRA/QLoRA/full model setup
data.py       JSONL records → token ids + completion-only labels; chat templates; packing
loop.py       the training loop (exactly resumable; DDP/FSDP when distributed)
checkpoint.py atomic checkpoints with optimizer/scheduler/RNG state, keep-last-K
dist.py       torchrun re-exec and process-group topology
progress.py   progress.json + best-effort POST to the operator
evaluate.py   eval loss/perplexity, prompt checks, greedy generation
bias.py       counterfactual bias probe (VADER sentiment, refusal, length gaps)
card.py       model card; digest.py content digest of the output
job.py        orchestration, error → exit code mapping, termination message
tinymodel.py  the tiny local Llama used by tests, examples and benchmarks
ggufimport.py a real base model: GGUF in a pinned wheel → verified HF safetensors dir + manifest
"""
