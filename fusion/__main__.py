from fusion.cli import app

app()
