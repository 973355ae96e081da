print("cmk")
