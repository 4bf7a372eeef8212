from cfe_cli.cli import main

main()
