from ss3d_data.cli import main

main()
