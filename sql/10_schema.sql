-- The example app's schema (examples/app.py): departments and their employees.
-- Applied by `flask --app examples.app initdb`; recorded in poolkit_sql_history.

CREATE TABLE department (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL UNIQUE,
  headcount INT NOT NULL DEFAULT 0  -- kept by the triggers below
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE employee (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  salary DECIMAL(10,2) NULL,
  hired DATE NULL,
  department_id INT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT fk_employee_department FOREIGN KEY (department_id) REFERENCES department (id)
) DEFAULT CHARSET=utf8mb4;

-- Trigger bodies hold ';', so the client delimiter changes while they are defined.
DELIMITER //
CREATE TRIGGER employee_hired AFTER INSERT ON employee FOR EACH ROW
BEGIN
  IF NEW.department_id IS NOT NULL THEN
    UPDATE department SET headcount = headcount + 1 WHERE id = NEW.department_id;
  END IF;
END//

CREATE TRIGGER employee_left AFTER DELETE ON employee FOR EACH ROW
BEGIN
  IF OLD.department_id IS NOT NULL THEN
    UPDATE department SET headcount = headcount - 1 WHERE id = OLD.department_id;
  END IF;
END//
DELIMITER ;

CREATE VIEW department_payroll AS
  SELECT d.name AS department, COUNT(e.id) AS employees, SUM(e.salary) AS payroll
  FROM department d LEFT JOIN employee e ON e.department_id = d.id
  GROUP BY d.id, d.name;
