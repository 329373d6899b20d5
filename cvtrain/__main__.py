from cvtrain import stop

stop.install()  # before the imports below: a SIGTERM during them is not lost

from cvtrain.cli import main  # noqa: E402

main()
