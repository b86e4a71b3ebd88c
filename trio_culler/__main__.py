from trio_culler.cli import main

main()
