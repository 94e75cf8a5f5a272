from digitnet.cli import main

main()
