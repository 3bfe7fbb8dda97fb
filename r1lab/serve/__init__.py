"""An OpenAI-compatible server over r1lab's one engine (`r1lab serve`), in four small modules:

    text.py       pure helpers: streaming detokenisation, the <think> reasoning/content split, s1 budget forcing
                  (also used by `r1lab chat`; no FastAPI needed)
    scheduler.py  the engine thread: one EngineBatch stepped by one background thread, fed between steps
    protocol.py   request bodies, the bounds on every value that reaches the engine, OpenAI-shaped errors
    app.py        the FastAPI app: /v1/models, /v1/chat/completions, /v1/completions, /health; the API key, the
                  body-size limit, prompts bounded and tokenized off the event loop

Nothing is imported here, so `from r1lab.serve.text import ...` needs neither FastAPI nor torch.
"""
