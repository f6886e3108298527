"""The GPT4Tools web app: `python app.py [--host ...] [--port ...] [--model ...]`, the same as
`python -m gpt4tools app`. It lives in gpt4tools/ui/web.py."""

import sys

from gpt4tools.ui.web import main

if __name__ == "__main__":
    sys.exit(main())
