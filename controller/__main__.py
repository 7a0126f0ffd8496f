from crossfarm.controller.app import main

main()
