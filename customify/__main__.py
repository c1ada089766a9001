from customify.cli import main

main()
