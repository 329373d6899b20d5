from cvtrain.cli import main

main()
