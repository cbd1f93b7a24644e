from loadbalancer.cli import main

main()
