from ss3d_render.cli import main

main()
