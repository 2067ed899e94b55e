from dealflow.cli import main

main()
