"""RaDialog's web app: a REST API (FastAPI) and a Gradio UI served from one process.

`app.server.create_app` composes them; `radialog serve` runs it. The library (`radialog`) never
imports this package.
"""

import os

# Gradio reads this when it is imported: no usage reports leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
