"""`attnlab studio`: the workshop in a browser, served on 127.0.0.1 (elsewhere only with a token)."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from attnlab.cli.text import literal


def studio_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs the "
                                      "token printed at start.")] = "127.0.0.1",
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI: where trainings are "
                                                     "tracked and runs compared (default "
                                                     "sqlite:///runs/mlflow.db).")] = None,
    jobs: Annotated[int, typer.Option(min=1, max=64, help="Trainings that run at once; the rest "
                                      "queue.")] = 1,
    experiments: Annotated[Path, typer.Option(help="Folder of experiment YAML files the Run screen "
                                              "offers.")] = Path("experiments"),
) -> None:
    """Serve the studio: design a program and see its mask, plan and speed as you type."""
    import uvicorn

    from attnlab.ui.studio import create_app, is_loopback, new_token

    token = None if is_loopback(host) else new_token()
    app = create_app(token=token, host=host, port=port, tracking_uri=tracking_uri, jobs=jobs,
                     experiments=experiments)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    console = Console(highlight=False)
    console.print(literal(f"attnlab studio at {url}"), soft_wrap=True)
    shipped = [e for e in app.state.experiments.names() if e["source"] == "shipped"]
    console.print(literal(f"experiments: {len(shipped)} in {experiments}/") if shipped else
                  literal(f"experiments: none in {experiments}/ (run from attnlab's checkout or "
                          "pass --experiments DIR); uploads and your own data still work"))
    if token:
        console.print("every request needs this token (the link above carries it); "
                      "stop with Ctrl+C")
    if open_:
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
