from crossreid.cli import main

main()
